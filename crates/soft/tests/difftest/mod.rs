//! The differential harness: machine image, reference (KVM) and soft
//! runners, snippet generator.

pub mod gen;
pub mod machine;
pub mod reference;
pub mod softrun;
