//! Exception vectors, the fault value instructions return, and the reasons
//! the interpreter stops executing a block.

pub const DE: u8 = 0;
pub const DB: u8 = 1;
pub const BP: u8 = 3;
pub const OFV: u8 = 4;
pub const UD: u8 = 6;
pub const NM: u8 = 7;
pub const DF: u8 = 8;
pub const TS: u8 = 10;
pub const NP: u8 = 11;
pub const SS: u8 = 12;
pub const GP: u8 = 13;
pub const PF: u8 = 14;
pub const MF: u8 = 16;
pub const AC: u8 = 17;
pub const XM: u8 = 19;

/// An exception raised by an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub vector: u8,
    /// The error code: 16 bits hold every code the engine raises
    /// (selectors, page-fault bits), and keep [`ExecResult`] within one
    /// register, which every executed instruction returns.
    pub error: Option<u16>,
}

impl Fault {
    pub const fn new(vector: u8) -> Self {
        Fault {
            vector,
            error: None,
        }
    }

    pub const fn with_code(vector: u8, code: u32) -> Self {
        Fault {
            vector,
            error: Some(code as u16),
        }
    }

    pub const fn gp(code: u32) -> Self {
        Fault::with_code(GP, code)
    }

    pub const fn ud() -> Self {
        Fault::new(UD)
    }

    /// Exceptions that push an error code in protected/long mode.
    pub fn has_error_code(vector: u8) -> bool {
        matches!(vector, DF | TS | NP | SS | GP | PF | AC)
    }

    /// Contributory exceptions (for double-fault rules).
    pub fn contributory(vector: u8) -> bool {
        matches!(vector, DE | TS | NP | SS | GP)
    }
}

/// Why an instruction did not simply complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// An exception to deliver through the IDT.
    Fault(Fault),
    /// HLT: wait for an interrupt.
    Halt,
    /// The state changed in a way that ends the current block (mode,
    /// paging, interrupt flag); the instruction itself completed.
    EndBlock,
    /// The instruction is not implemented.
    Unsupported,
    /// Triple fault.
    Shutdown,
}

impl From<Fault> for Stop {
    fn from(f: Fault) -> Self {
        Stop::Fault(f)
    }
}

pub type ExecResult<T = ()> = Result<T, Stop>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_fit_in_a_register() {
        assert!(std::mem::size_of::<ExecResult>() <= 8);
    }

    #[test]
    fn error_code_vectors() {
        assert!(Fault::has_error_code(PF));
        assert!(Fault::has_error_code(GP));
        assert!(!Fault::has_error_code(UD));
        assert!(!Fault::has_error_code(DE));
        assert!(Fault::contributory(GP));
        assert!(!Fault::contributory(PF));
    }
}
