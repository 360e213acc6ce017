//! The XSAVE-managed state in engine-neutral terms: XCR0 and an image in
//! the standard (non-compacted) format of XSAVE, the layout the
//! architecture defines and CPUID leaf 0xD describes.

/// Size of the legacy region (the FXSAVE image) at the start of the area.
pub const XSAVE_LEGACY_SIZE: usize = 512;
/// Offset of the 64-byte XSAVE header (XSTATE_BV, XCOMP_BV, reserved).
pub const XSAVE_HEADER_OFFSET: usize = 512;
/// Size of the XSAVE header.
pub const XSAVE_HEADER_SIZE: usize = 64;
/// Offset of the AVX component (bits 128-255 of YMM0-15) in the standard
/// format (CPUID.(EAX=0DH,ECX=2).EBX).
pub const XSAVE_AVX_OFFSET: usize = 576;
/// Size of the AVX component (CPUID.(EAX=0DH,ECX=2).EAX).
pub const XSAVE_AVX_SIZE: usize = 256;
/// The smallest image [`XsaveState`] carries: legacy region, header and
/// the AVX component.
pub const XSAVE_MIN_SIZE: usize = XSAVE_AVX_OFFSET + XSAVE_AVX_SIZE;

/// State-component bits of XCR0 and XSTATE_BV.
pub const XFEATURE_X87: u64 = 1 << 0;
pub const XFEATURE_SSE: u64 = 1 << 1;
pub const XFEATURE_AVX: u64 = 1 << 2;

/// XCR0 and the XSAVE area of one vCPU.
///
/// `area` is a standard-format XSAVE image: the legacy region (bytes
/// 0-511, laid out as FXSAVE's 64-bit image), the header (512-575:
/// XSTATE_BV at 512, XCOMP_BV at 520, which is 0 in this format) and each
/// further component at its CPUID leaf 0xD offset. It is at least
/// [`XSAVE_MIN_SIZE`] bytes long; an engine that models more components
/// (KVM on a host with AVX-512) returns a longer image. When the state is
/// written, a component whose XSTATE_BV bit is clear takes its initial
/// configuration, as XRSTOR does, and bytes past the components an engine
/// models are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XsaveState {
    pub xcr0: u64,
    pub area: Vec<u8>,
}

impl Default for XsaveState {
    /// The state after RESET: XCR0 = 1 (x87 only), every component in its
    /// initial configuration (XSTATE_BV = 0) with MXCSR at its reset value.
    fn default() -> Self {
        let mut area = vec![0u8; XSAVE_MIN_SIZE];
        area[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
        area[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        area[28..32].copy_from_slice(&0xffffu32.to_le_bytes());
        XsaveState { xcr0: 1, area }
    }
}

impl XsaveState {
    /// XSTATE_BV: which components the image holds (a clear bit means
    /// the component is in its initial configuration).
    pub fn xstate_bv(&self) -> u64 {
        self.header_word(0)
    }

    pub fn set_xstate_bv(&mut self, bv: u64) {
        self.set_header_word(0, bv);
    }

    /// XCOMP_BV (0 in the standard format this type carries).
    pub fn xcomp_bv(&self) -> u64 {
        self.header_word(8)
    }

    fn header_word(&self, at: usize) -> u64 {
        let o = XSAVE_HEADER_OFFSET + at;
        self.area
            .get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    }

    fn set_header_word(&mut self, at: usize, v: u64) {
        let o = XSAVE_HEADER_OFFSET + at;
        if self.area.len() < o + 8 {
            self.area.resize(XSAVE_MIN_SIZE.max(o + 8), 0);
        }
        self.area[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Bits 128-255 of YMM`i`, from the AVX component (zero when the image
    /// is shorter or `i` is out of range).
    pub fn ymm_hi(&self, i: usize) -> [u8; 16] {
        let o = XSAVE_AVX_OFFSET + 16 * i;
        if i >= 16 {
            return [0; 16];
        }
        self.area
            .get(o..o + 16)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_reset_state() {
        let s = XsaveState::default();
        assert_eq!(s.xcr0, 1);
        assert_eq!(s.xstate_bv(), 0);
        assert_eq!(s.area.len(), XSAVE_MIN_SIZE);
        assert_eq!(&s.area[24..28], &0x1f80u32.to_le_bytes());
    }

    #[test]
    fn header_words_round_trip_and_short_images_read_zero() {
        let mut s = XsaveState {
            xcr0: 7,
            area: vec![0; 100],
        };
        assert_eq!(s.xstate_bv(), 0);
        assert_eq!(s.ymm_hi(3), [0; 16]);
        s.set_xstate_bv(6);
        assert_eq!(s.xstate_bv(), 6);
        assert_eq!(s.area.len(), XSAVE_MIN_SIZE);
        assert_eq!(s.xcomp_bv(), 0);
        assert_eq!(s.ymm_hi(16), [0; 16]);
    }
}
