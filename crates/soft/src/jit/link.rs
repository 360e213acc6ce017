//! Where translated code finds the next translation without going back
//! to the run loop: the links of static exits ([`Link`], handed out by a
//! [`LinkPool`] per code buffer) and the jump table indirect exits look
//! their target up in ([`JumpTable`]). Both are filled in by the run loop
//! and followed only under the chain key they were made with.

use std::cell::Cell;

/// One entry of the jump table: a guest RIP, the chain key it was
/// entered under and that block's chain entry.
#[repr(C)]
pub(super) struct JumpEntry {
    pub(super) rip: Cell<u64>,
    pub(super) key: Cell<u64>,
    pub(super) target: Cell<u64>,
    _pad: u64,
}

/// Jump-table entries (a power of two; 32 bytes each).
pub(super) const JUMPS: usize = 16384;

/// Where indirect transfers (RET, JMP/CALL through a register) look for
/// their target's translation without going back to the run loop: a
/// direct-mapped table from guest RIP to chain entry, filled in by the run
/// loop with every block it enters, valid under the key it was entered
/// with.
pub(super) struct JumpTable {
    pub(super) e: Box<[JumpEntry]>,
}

impl JumpTable {
    pub(super) fn new() -> JumpTable {
        JumpTable {
            e: (0..JUMPS)
                .map(|_| JumpEntry {
                    rip: Cell::new(0),
                    key: Cell::new(u64::MAX),
                    target: Cell::new(0),
                    _pad: 0,
                })
                .collect(),
        }
    }

    fn index(rip: u64) -> usize {
        ((rip ^ (rip >> 12)) as usize) & (JUMPS - 1)
    }

    pub(super) fn set(&self, rip: u64, key: u64, target: usize) {
        let e = &self.e[Self::index(rip)];
        e.rip.set(rip);
        e.key.set(key);
        e.target.set(target as u64);
    }

    pub(super) fn clear(&self) {
        self.e.iter().for_each(|e| e.key.set(u64::MAX));
    }
}

/// Where a static exit of a translated block goes next, filled in by the
/// run loop ([`super::translator::Jit::link`]) once it has found the
/// successor translated: the successor's chain entry and the chain key it
/// was found under (`u64::MAX`: none yet).
#[repr(C)]
pub(super) struct Link {
    pub(super) key: Cell<u64>,
    pub(super) target: Cell<u64>,
}

/// The links of a code buffer's translations, handed out by a bump
/// allocator that starts over with the buffer. The cells are reserved
/// up front and never move (translated code holds their addresses), but
/// only those handed out are touched.
pub(super) struct LinkPool {
    cells: std::cell::RefCell<Vec<Link>>,
    /// Where the cells are (checked in debug builds).
    base: usize,
}

/// Links per code buffer (16 bytes each; untouched ones cost no memory).
const LINKS: usize = 1 << 20;

impl LinkPool {
    pub(super) fn new() -> LinkPool {
        let cells = Vec::with_capacity(LINKS);
        let base = cells.as_ptr() as usize;
        LinkPool {
            cells: std::cell::RefCell::new(cells),
            base,
        }
    }

    /// A fresh link: its index and address.
    pub(super) fn alloc(&self) -> Option<(u32, u64)> {
        let mut cells = self.cells.borrow_mut();
        let i = cells.len();
        if i == LINKS {
            return None;
        }
        // Within the reserved capacity: the vector does not move.
        cells.push(Link {
            key: Cell::new(u64::MAX),
            target: Cell::new(0),
        });
        debug_assert_eq!(cells.as_ptr() as usize, self.base);
        Some((i as u32, &cells[i] as *const Link as u64))
    }

    /// Fills in link `i` (when it is still handed out).
    pub(super) fn set(&self, i: usize, target: u64, key: u64) {
        if let Some(c) = self.cells.borrow().get(i) {
            c.target.set(target);
            c.key.set(key);
        }
    }

    pub(super) fn reset(&self) {
        self.cells.borrow_mut().clear();
    }
}
