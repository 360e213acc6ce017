//! The differential harness: machine image, reference (KVM) and soft
//! runners, snippet generator and its tables of forms.

pub mod advertised;
pub mod covered;
pub mod forms;
pub mod fpvalues;
pub mod gather;
pub mod gen;
pub mod knobs;
pub mod leftout;
pub mod machine;
pub mod native;
pub mod operands;
pub mod prefix;
pub mod prologue;
pub mod reference;
pub mod report;
pub mod softrun;
pub mod special;
