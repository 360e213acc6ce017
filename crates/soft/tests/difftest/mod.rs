//! The differential harness: machine image, reference (KVM) and soft
//! runners, snippet generator and its tables of forms.

pub mod forms;
pub mod gen;
pub mod machine;
pub mod operands;
pub mod reference;
pub mod softrun;
