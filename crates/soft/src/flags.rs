//! RFLAGS with lazily computed arithmetic flags: an ALU instruction records
//! its operands and result, and CF/PF/AF/ZF/SF/OF are derived only when an
//! instruction (or the VMM) reads them.

pub const CF: u64 = 1 << 0;
pub const PF: u64 = 1 << 2;
pub const AF: u64 = 1 << 4;
pub const ZF: u64 = 1 << 6;
pub const SF: u64 = 1 << 7;
pub const TF: u64 = 1 << 8;
pub const IF: u64 = 1 << 9;
pub const DF: u64 = 1 << 10;
pub const OF: u64 = 1 << 11;
pub const IOPL: u64 = 3 << 12;
pub const NT: u64 = 1 << 14;
pub const RF: u64 = 1 << 16;
pub const VM: u64 = 1 << 17;
pub const AC: u64 = 1 << 18;
pub const ID: u64 = 1 << 21;
/// The six arithmetic status flags.
pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;
/// Bit 1 always reads as one.
pub const FIXED: u64 = 1 << 1;

/// The operation whose operands are held for lazy evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FlagOp {
    /// All flags are in `bits`.
    None,
    Add,
    /// ADC; `cin` holds the carry in.
    Adc,
    Sub,
    /// SBB; `cin` holds the borrow in.
    Sbb,
    /// AND/OR/XOR/TEST: CF=OF=0.
    Logic,
    /// INC: CF comes from `bits`.
    Inc,
    /// DEC: CF comes from `bits`.
    Dec,
}

/// RFLAGS, partly lazy.
#[derive(Debug, Clone, Copy)]
pub struct Flags {
    /// Non-arithmetic flags always; arithmetic flags when `op` is `None`
    /// (and CF for `Inc`/`Dec`).
    bits: u64,
    op: FlagOp,
    /// Operand size in bits (8, 16, 32, 64).
    size: u32,
    dst: u64,
    src: u64,
    res: u64,
    cin: bool,
}

impl Default for Flags {
    fn default() -> Self {
        Flags::from_bits(FIXED)
    }
}

/// The I/O privilege level in RFLAGS value `rflags`.
#[inline]
pub fn iopl(rflags: u64) -> u8 {
    ((rflags & IOPL) >> 12) as u8
}

/// The RFLAGS bits POPF (and IRET, which adds RF) may change at privilege
/// `cpl` with an operand of `bytes` bytes, given the flags `old` before
/// it: IF only when CPL <= IOPL, IOPL only at CPL 0, and a 16-bit
/// operand reaches the low word only. VM, VIF and VIP are never written
/// (no virtual-8086 mode).
pub fn pop_writable(old: u64, cpl: u8, bytes: u64) -> u64 {
    let mut can = ARITH | TF | DF | NT | AC | ID;
    if cpl <= iopl(old) {
        can |= IF;
    }
    if cpl == 0 {
        can |= IOPL;
    }
    if bytes == 2 {
        can &= 0xffff;
    }
    can
}

#[inline]
pub fn mask(size: u32) -> u64 {
    if size >= 64 {
        u64::MAX
    } else {
        (1u64 << size) - 1
    }
}

#[inline]
fn parity(v: u64) -> bool {
    (v as u8).count_ones().is_multiple_of(2)
}

/// Byte offsets of the lazy-flag fields inside [`Flags`], for the
/// translator ([`crate::jit`]), which stores what `set_lazy` would.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlagsLayout {
    pub bits: usize,
    pub op: usize,
    pub size: usize,
    pub dst: usize,
    pub src: usize,
    pub res: usize,
    pub cin: usize,
}

impl Flags {
    pub(crate) fn layout() -> FlagsLayout {
        FlagsLayout {
            bits: std::mem::offset_of!(Flags, bits),
            op: std::mem::offset_of!(Flags, op),
            size: std::mem::offset_of!(Flags, size),
            dst: std::mem::offset_of!(Flags, dst),
            src: std::mem::offset_of!(Flags, src),
            res: std::mem::offset_of!(Flags, res),
            cin: std::mem::offset_of!(Flags, cin),
        }
    }

    pub fn from_bits(bits: u64) -> Self {
        Flags {
            bits: bits | FIXED,
            op: FlagOp::None,
            size: 64,
            dst: 0,
            src: 0,
            res: 0,
            cin: false,
        }
    }

    /// Records an arithmetic result. Values may carry garbage above `size`.
    #[inline]
    pub fn set_lazy(&mut self, op: FlagOp, size: u32, dst: u64, src: u64, res: u64) {
        if matches!(op, FlagOp::Inc | FlagOp::Dec) {
            let cf = self.cf();
            self.bits = (self.bits & !CF) | if cf { CF } else { 0 };
        }
        self.op = op;
        self.size = size;
        self.dst = dst;
        self.src = src;
        self.res = res;
    }

    /// Keeps CF in `bits`, as INC/DEC do before recording their result
    /// (the translator then stores the rest itself).
    #[inline]
    pub(crate) fn pin_cf(&mut self) {
        let cf = self.cf();
        self.bits = (self.bits & !CF) | if cf { CF } else { 0 };
    }

    /// Records ADC/SBB with their carry in.
    #[inline]
    pub fn set_lazy_carry(
        &mut self,
        op: FlagOp,
        size: u32,
        dst: u64,
        src: u64,
        res: u64,
        cin: bool,
    ) {
        self.set_lazy(op, size, dst, src, res);
        self.cin = cin;
    }

    /// Sets the arithmetic flags eagerly (for instructions with unusual rules).
    #[inline]
    pub fn set_arith(&mut self, arith: u64) {
        // `bits` always holds the non-arithmetic flags.
        let keep = self.bits & !ARITH;
        self.bits = keep | (arith & ARITH);
        self.op = FlagOp::None;
    }

    /// Sets ZF/SF/PF from a result, CF/OF as given, AF cleared.
    pub fn set_szp(&mut self, size: u32, res: u64, cf: bool, of: bool) {
        let m = mask(size);
        let mut f = 0;
        if res & m == 0 {
            f |= ZF;
        }
        if (res >> (size - 1)) & 1 != 0 {
            f |= SF;
        }
        if parity(res) {
            f |= PF;
        }
        if cf {
            f |= CF;
        }
        if of {
            f |= OF;
        }
        self.set_arith(f);
    }

    #[inline]
    fn sign(&self, v: u64) -> bool {
        (v >> (self.size - 1)) & 1 != 0
    }

    #[inline(always)]
    pub fn cf(&self) -> bool {
        let m = mask(self.size);
        match self.op {
            FlagOp::None | FlagOp::Inc | FlagOp::Dec => self.bits & CF != 0,
            FlagOp::Add => (self.res & m) < (self.dst & m),
            FlagOp::Adc => {
                if self.cin {
                    (self.res & m) <= (self.dst & m)
                } else {
                    (self.res & m) < (self.dst & m)
                }
            }
            FlagOp::Sub => (self.dst & m) < (self.src & m),
            FlagOp::Sbb => {
                if self.cin {
                    (self.dst & m) <= (self.src & m)
                } else {
                    (self.dst & m) < (self.src & m)
                }
            }
            FlagOp::Logic => false,
        }
    }

    #[inline(always)]
    pub fn zf(&self) -> bool {
        match self.op {
            FlagOp::None => self.bits & ZF != 0,
            _ => self.res & mask(self.size) == 0,
        }
    }

    #[inline(always)]
    pub fn sf(&self) -> bool {
        match self.op {
            FlagOp::None => self.bits & SF != 0,
            _ => self.sign(self.res),
        }
    }

    #[inline(always)]
    pub fn of(&self) -> bool {
        match self.op {
            FlagOp::None => self.bits & OF != 0,
            FlagOp::Add | FlagOp::Adc | FlagOp::Inc => {
                self.sign((self.dst ^ self.res) & (self.src ^ self.res))
            }
            FlagOp::Sub | FlagOp::Sbb | FlagOp::Dec => {
                self.sign((self.dst ^ self.src) & (self.dst ^ self.res))
            }
            FlagOp::Logic => false,
        }
    }

    #[inline(always)]
    pub fn pf(&self) -> bool {
        match self.op {
            FlagOp::None => self.bits & PF != 0,
            _ => parity(self.res),
        }
    }

    #[inline]
    pub fn af(&self) -> bool {
        match self.op {
            FlagOp::None => self.bits & AF != 0,
            FlagOp::Logic => false,
            _ => (self.dst ^ self.src ^ self.res) & 0x10 != 0,
        }
    }

    /// The full RFLAGS value.
    pub fn get(&self) -> u64 {
        if self.op == FlagOp::None {
            return self.bits;
        }
        let mut v = self.bits & !ARITH;
        for (set, bit) in [
            (self.cf(), CF),
            (self.pf(), PF),
            (self.af(), AF),
            (self.zf(), ZF),
            (self.sf(), SF),
            (self.of(), OF),
        ] {
            if set {
                v |= bit;
            }
        }
        v
    }

    /// Replaces all of RFLAGS.
    pub fn set(&mut self, v: u64) {
        *self = Flags::from_bits(v);
    }

    /// Tests a non-arithmetic flag.
    #[inline]
    pub fn has(&self, bit: u64) -> bool {
        debug_assert_eq!(bit & ARITH, 0);
        self.bits & bit != 0
    }

    /// Sets or clears non-arithmetic flag bits.
    #[inline]
    pub fn put(&mut self, bit: u64, on: bool) {
        debug_assert_eq!(bit & ARITH, 0);
        if on {
            self.bits |= bit;
        } else {
            self.bits &= !bit;
        }
    }

    /// Sets CF alone, keeping the other arithmetic flags.
    pub fn set_cf(&mut self, on: bool) {
        let v = self.get();
        self.set_arith((v & !CF) | if on { CF } else { 0 });
    }

    /// Evaluates condition code `cc` (the low nibble of Jcc/SETcc/CMOVcc).
    #[inline(always)]
    pub fn cond(&self, cc: u8) -> bool {
        let r = match cc >> 1 {
            0 => self.of(),
            1 => self.cf(),
            2 => self.zf(),
            3 => self.cf() || self.zf(),
            4 => self.sf(),
            5 => self.pf(),
            6 => self.sf() != self.of(),
            _ => self.zf() || (self.sf() != self.of()),
        };
        r ^ (cc & 1 != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_carry_and_overflow() {
        let mut f = Flags::default();
        f.set_lazy(FlagOp::Add, 8, 0x7f, 1, 0x80);
        assert!(f.of());
        assert!(!f.cf());
        assert!(f.sf());
        assert!(f.af());
        f.set_lazy(FlagOp::Add, 8, 0xff, 1, 0x100);
        assert!(f.cf());
        assert!(f.zf());
    }

    #[test]
    fn sub_borrow_and_conditions() {
        let mut f = Flags::default();
        f.set_lazy(FlagOp::Sub, 32, 1, 2, 1u64.wrapping_sub(2));
        assert!(f.cf());
        assert!(f.cond(0x2)); // B
        assert!(f.cond(0xc)); // L
        assert!(!f.cond(0x4)); // E
    }

    #[test]
    fn inc_keeps_cf() {
        let mut f = Flags::from_bits(CF);
        f.set_lazy(FlagOp::Inc, 64, 5, 1, 6);
        assert!(f.cf());
        assert_eq!(f.get() & ZF, 0);
    }

    #[test]
    fn adc_with_carry_in_wraps() {
        let mut f = Flags::default();
        f.set_lazy_carry(FlagOp::Adc, 16, 0xffff, 0xffff, 0xffff, true);
        assert!(f.cf());
    }
}
