//! The soft engine's vCPU: the `hypervisor::Vcpu` implementation and the
//! run loop (block lookup, interpretation, exception and interrupt
//! delivery, HLT sleeping, INIT/SIPI start-up, kicks).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use devices::irqchip::Startup;
use hypervisor::{
    CpuidEntry, DeviceIo, FpuState, Regs, Result, SpecialRegs, Vcpu, VcpuKicker, VmExit, XsaveState,
};

use crate::cache::BlockCache;
use crate::config::SoftConfig;
use crate::core::Core;
use crate::cpu::{Cpu, CS};
use crate::exception::Stop;
use crate::exec;
use crate::flags;
use crate::interrupt::{self, Source};
use crate::jit::{self, Jit};
use crate::mmu::Access;
use crate::vm::{Shared, Signal};

/// The host TSC.
pub fn host_tsc() -> u64 {
    // SAFETY: RDTSC has no memory effects; every x86-64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The host TSC against the monotonic clock, from a reading taken when
/// the VM got its memory: its rate is measured over everything since, so
/// it is as fine as the guest is old (a Linux guest arms its first TSC
/// deadline a few hundred milliseconds in).
pub struct TscClock {
    t0: Instant,
    tsc0: u64,
}

impl TscClock {
    /// Shortest span the rate is measured over.
    const MIN_SPAN: Duration = Duration::from_millis(10);
    /// Longest wait a deadline is turned into (the guest may write any
    /// 64-bit value).
    const MAX_WAIT: Duration = Duration::from_secs(1 << 20);

    pub fn new() -> TscClock {
        TscClock {
            t0: Instant::now(),
            tsc0: host_tsc(),
        }
    }

    /// When the TSC will have advanced by `ticks` from now.
    pub fn after(&self, ticks: u64) -> Instant {
        // A VM this young has no rate worth the name yet: wait for one
        // (at most once, in its first milliseconds).
        while self.t0.elapsed() < Self::MIN_SPAN {
            std::hint::spin_loop();
        }
        let now = Instant::now();
        let span = now.duration_since(self.t0).as_secs_f64();
        let hz = host_tsc().wrapping_sub(self.tsc0) as f64 / span;
        if !hz.is_normal() || hz <= 0.0 {
            return now;
        }
        let wait = Duration::try_from_secs_f64(ticks as f64 / hz).unwrap_or(Self::MAX_WAIT);
        now + wait.min(Self::MAX_WAIT)
    }
}

impl Default for TscClock {
    fn default() -> Self {
        TscClock::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    Running,
    Halted,
    /// An AP waiting for a start-up IPI.
    WaitSipi,
}

/// One soft vCPU.
pub struct SoftVcpu {
    pub(crate) core: Core,
    cache: BlockCache,
    signal: Arc<Signal>,
    state: RunState,
    /// The irqchip may hold an interrupt for us (sticky until none is).
    maybe_irq: bool,
    /// Guest RIP samples, when asked for (`VESSEL_SOFT_SAMPLE`).
    samples: Option<crate::sample::RipSampler>,
    /// Print the run statistics when the vCPU ends (`SoftConfig::stats`).
    stats_on: bool,
    /// The binary translator, unless turned off (`VESSEL_SOFT_JIT=0`).
    jit: Option<Jit>,
    /// The chain keys of translated runs.
    chain: ChainKeys,
    /// How runs went, printed with `VESSEL_SOFT_JIT_STATS` (statistics).
    stats: RunStats,
}

/// Counts of the run loop's rounds by how they went (statistics, printed
/// when the vCPU ends with `VESSEL_SOFT_JIT_STATS` set).
#[derive(Default, Debug)]
struct RunStats {
    /// Blocks the interpreter ran.
    interpreted: u64,
    /// Runs of translated code, and the links they followed.
    translated: u64,
    chained: u64,
    /// How translated runs ended: at a static exit whose link was not
    /// followed, at an indirect exit the jump table did not have, off
    /// the end of a block, after an instruction that ends the run, at a
    /// stop (fault, HLT, ...).
    static_exit: u64,
    indirect_exit: u64,
    end: u64,
    after: u64,
    stopped: u64,
    /// Runs that started with no links allowed (an interrupt may wait).
    no_budget: u64,
    /// Links filled in (a static exit not followed, then its successor
    /// found translated).
    linked: u64,
    /// Time spent halted, waiting for an interrupt.
    halted: Duration,
}

impl Drop for SoftVcpu {
    fn drop(&mut self) {
        if self.stats_on {
            eprintln!(
                "soft vcpu {}: {:?}; chain keys moved (tlb, global tlb, code, blocks): {:?}; \
                 blocks decoded {}, decoded again {} in {:?}",
                self.core.index,
                self.stats,
                self.chain.moved,
                self.cache.decoded,
                self.cache.redecoded,
                self.cache.decode_time
            );
        }
    }
}

/// The keys under which links between translations (and jump-table
/// entries) hold: they move on whenever guest code is written or a cached
/// block is dropped, and the first whenever the TLB is flushed, the
/// second (for links into blocks on global pages, the kernel's) only when
/// a flush may drop a global page, not on CR3 writes. Both tell the
/// privilege levels apart (so system calls back and forth keep both
/// sides' links); only 64-bit code is translated, and CS changes only in
/// trampolined instructions, which end a run.
#[derive(Default)]
struct ChainKeys {
    key: [u64; 2],
    /// What each key was made of: TLB epoch, code-write epoch, block
    /// cache drop epoch.
    state: [(u64, u64, u64); 2],
    /// Times the keys moved on because of the TLB (each key), code
    /// writes and dropped blocks (statistics).
    moved: [u64; 4],
}

impl ChainKeys {
    fn keys(&mut self, core: &Core, link_epoch: u64) -> jit::Keys {
        let code = core.ram().code_epoch();
        let tlb = [core.tlb.epoch, core.tlb.global_epoch];
        let cpl = u64::from(core.cpu.cpl());
        let mut k = [0; 2];
        for i in 0..2 {
            let now = (tlb[i], code, link_epoch);
            if now != self.state[i] {
                let was = self.state[i];
                if was.0 != now.0 {
                    self.moved[i] += 1;
                }
                if i == 0 && was.1 != now.1 {
                    self.moved[2] += 1;
                }
                if i == 0 && was.2 != now.2 {
                    self.moved[3] += 1;
                }
                self.state[i] = now;
                self.key[i] += 1;
            }
            // Bit 2 keeps the two key spaces apart, bits 0-1 hold the CPL.
            k[i] = (self.key[i] << 3) | ((i as u64) << 2) | cpl;
        }
        jit::Keys {
            all: k[0],
            global: k[1],
        }
    }
}

/// Links translated code may follow in one run before the run loop gets
/// a look at timers (interrupts and kicks end a run at the next link by
/// themselves). At 64, a fifth of the Debian boot's runs ended on the
/// budget; at 512, 3%.
const CHAIN_BUDGET: u32 = 512;

/// How often a block that loops to itself re-runs before the run loop
/// looks at interrupts again.
const SELF_LOOP_ROUNDS: u32 = 32;

/// How many blocks run between checks of the clock and kicks.
const POLL_BLOCKS: u32 = 256;

impl SoftVcpu {
    pub(crate) fn new(
        shared: Arc<Shared>,
        io: Arc<dyn DeviceIo>,
        index: usize,
        signal: Arc<Signal>,
        config: &SoftConfig,
    ) -> Self {
        let has_irq = shared.irq.get().is_some();
        let mut core = Core::new(shared, io, index);
        if index > 0 {
            core.cpu.apic_base &= !(1 << 8);
        }
        SoftVcpu {
            core,
            cache: BlockCache::new(config),
            signal,
            state: if index > 0 && has_irq {
                RunState::WaitSipi
            } else {
                RunState::Running
            },
            maybe_irq: true,
            samples: config.sample_rips.then(crate::sample::RipSampler::default),
            jit: Jit::new(config),
            stats_on: config.stats,
            chain: ChainKeys::default(),
            stats: RunStats::default(),
        }
    }

    /// Instructions retired so far.
    pub fn retired(&self) -> u64 {
        self.core.retired
    }

    fn handle_startup(&mut self) {
        let Some(irq) = self.core.shared.irq.get().cloned() else {
            return;
        };
        while let Some(s) = irq.take_startup(self.core.index) {
            match s {
                Startup::Init => {
                    // INIT resets the CPU but not its APIC base or its time
                    // stamp counter: a TSC reset here would leave an AP
                    // hours apart from the BSP (Linux then sees its clock
                    // jump when it switches to the TSC).
                    let apic = self.core.cpu.apic_base;
                    let tsc_offset = self.core.cpu.msr.tsc_offset;
                    self.core.cpu = Cpu::reset();
                    self.core.cpu.apic_base = apic;
                    self.core.cpu.msr.tsc_offset = tsc_offset;
                    self.core.tlb.flush();
                    self.state = RunState::WaitSipi;
                }
                Startup::Sipi(v) => {
                    if self.state == RunState::WaitSipi {
                        let c = &mut self.core.cpu;
                        c.seg[CS].selector = u16::from(v) << 8;
                        c.seg[CS].base = u64::from(v) << 12;
                        c.rip = 0;
                        self.state = RunState::Running;
                    }
                }
            }
        }
    }

    fn poll_timers(&self) -> Option<Instant> {
        let irq = self.core.shared.irq.get()?;
        let now = Instant::now();
        match irq.next_deadline() {
            Some(d) if d <= now => {
                irq.poll(now);
                irq.next_deadline()
            }
            d => d,
        }
    }

    /// Takes an external interrupt when one is pending and allowed.
    fn try_interrupt(&mut self) -> std::result::Result<bool, Stop> {
        // A plain load first: the swap is a locked instruction, too dear
        // for every block.
        if self.signal.attention.load(Ordering::Relaxed)
            && self.signal.attention.swap(false, Ordering::SeqCst)
        {
            self.maybe_irq = true;
            self.handle_startup();
        }
        if !self.maybe_irq || !self.core.cpu.flags.has(flags::IF) || self.core.cpu.int_shadow {
            return Ok(false);
        }
        let Some(irq) = self.core.shared.irq.get().cloned() else {
            self.maybe_irq = false;
            return Ok(false);
        };
        match irq.ack(self.core.index) {
            Some(v) => {
                self.state = RunState::Running;
                if let Err(f) = interrupt::deliver(&mut self.core, v, None, Source::External) {
                    interrupt::raise(&mut self.core, f)?;
                }
                Ok(true)
            }
            None => {
                self.maybe_irq = false;
                Ok(false)
            }
        }
    }

    fn failure(&mut self) -> VmExit {
        let rip = self.core.cpu.rip;
        let mut bytes = vec![0u8; 15];
        let lin = self.core.cpu.seg[CS].base.wrapping_add(rip);
        let lin = if self.core.cpu.mode64() { rip } else { lin };
        if self
            .core
            .read_lin(lin, &mut bytes, Access::Exec, true)
            .is_err()
        {
            bytes.clear();
        }
        VmExit::EmulationFailure { rip, bytes }
    }

    /// Waits while halted or waiting for SIPI. Returns an exit when the
    /// run must end.
    fn idle(&mut self) -> Option<VmExit> {
        loop {
            if self.signal.kicked.load(Ordering::SeqCst) {
                return Some(VmExit::Interrupted);
            }
            if self.signal.attention.swap(false, Ordering::SeqCst) {
                self.maybe_irq = true;
                self.handle_startup();
            }
            match self.state {
                RunState::Running => return None,
                RunState::Halted => {
                    let Some(irq) = self.core.shared.irq.get().cloned() else {
                        self.state = RunState::Running;
                        return Some(VmExit::Hlt);
                    };
                    if !self.core.cpu.flags.has(flags::IF) {
                        self.state = RunState::Running;
                        return Some(VmExit::Hlt);
                    }
                    if irq.has_interrupt(self.core.index) {
                        self.maybe_irq = true;
                        self.state = RunState::Running;
                        return None;
                    }
                }
                RunState::WaitSipi => {}
            }
            let deadline = self.poll_timers();
            let wait = deadline
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_millis(50))
                .min(Duration::from_millis(50));
            if !wait.is_zero() {
                let t = Instant::now();
                self.signal.wait(wait);
                self.stats.halted += t.elapsed();
            }
        }
    }

    /// What the run loop does once a block (run either way) ended with
    /// `end`: go on (None), or leave with this exit.
    fn after_block(&mut self, end: BlockEnd) -> Option<VmExit> {
        match end {
            BlockEnd::Next | BlockEnd::Again | BlockEnd::Other => None,
            BlockEnd::Halt => {
                self.state = RunState::Halted;
                None
            }
            BlockEnd::Kicked => Some(VmExit::Interrupted),
            BlockEnd::Shutdown => Some(VmExit::Shutdown),
            BlockEnd::Unsupported => Some(self.failure()),
        }
    }

    /// Runs the one instruction at RIP with RFLAGS.TF set, then takes
    /// the single-step trap (#DB with DR6.BS) unless it faulted.
    fn single_step(&mut self) -> Option<VmExit> {
        let slot = match self.cache.lookup(&mut self.core) {
            Ok(b) => b,
            Err(Stop::Fault(f)) => {
                return interrupt::raise(&mut self.core, f)
                    .is_err()
                    .then_some(VmExit::Shutdown);
            }
            Err(_) => return Some(self.failure()),
        };
        let block = self.cache.get(slot);
        let (Some(ins), Some(f)) = (block.instrs.first(), block.fast.first()) else {
            return Some(self.failure());
        };
        let (retired, end) = match (f.h)(&mut self.core, f, ins) {
            Ok(()) => {
                if !f.sets_rip {
                    self.core.cpu.rip = f.next;
                }
                (1, BlockEnd::Other)
            }
            Err(stop) => on_stop(&mut self.core, f, stop, &self.signal),
        };
        self.core.retired += retired;
        // INT n, INT3, INTO and INT1 clear TF on their way into the
        // handler and take no single-step trap.
        let software_int = matches!(
            ins.mnemonic(),
            iced_x86::Mnemonic::Int
                | iced_x86::Mnemonic::Int3
                | iced_x86::Mnemonic::Into
                | iced_x86::Mnemonic::Int1
        );
        if retired == 1 && !software_int && matches!(end, BlockEnd::Other | BlockEnd::Kicked) {
            self.core.cpu.dr6 |= crate::cpu::DR6_BS;
            let trap = crate::exception::Fault::new(crate::exception::DB);
            if interrupt::raise(&mut self.core, trap).is_err() {
                return Some(VmExit::Shutdown);
            }
        }
        self.after_block(end)
    }

    fn run_loop(&mut self) -> VmExit {
        let mut n: u32 = 0;
        // The block just run, when it ended in a way its successor can be
        // chained to (a branch or running off its end).
        let mut prev: Option<usize> = None;
        // The static exit the last translated run left by, to be linked
        // to the block that comes next.
        let mut pending: Option<jit::PendingLink> = None;
        let mut next_poll = POLL_BLOCKS;
        loop {
            if self.state != RunState::Running {
                prev = None;
                pending = None;
                if let Some(e) = self.idle() {
                    return e;
                }
            }
            n = n.wrapping_add(1);
            if n >= next_poll {
                next_poll = n.wrapping_add(POLL_BLOCKS);
                if self.signal.kicked.load(Ordering::SeqCst) {
                    return VmExit::Interrupted;
                }
                self.poll_timers();
                if let Some(s) = &mut self.samples {
                    s.record(self.core.cpu.rip, self.core.retired);
                }
            }
            let mut link = pending.take();
            match self.try_interrupt() {
                Ok(true) => {
                    prev = None;
                    link = None;
                }
                Ok(false) => {}
                Err(Stop::Shutdown) => return VmExit::Shutdown,
                Err(_) => return self.failure(),
            }
            self.core.cpu.int_shadow = false;
            if self.core.cpu.flags.has(flags::TF) {
                prev = None;
                if let Some(e) = self.single_step() {
                    return e;
                }
                continue;
            }
            let chained = prev.and_then(|p| self.cache.chained(p, &self.core));
            let slot = match chained.map_or_else(|| self.cache.lookup(&mut self.core), Ok) {
                Ok(b) => {
                    if chained.is_none() {
                        if let Some(p) = prev {
                            self.cache.link(p, b, &self.core);
                        }
                    }
                    b
                }
                Err(Stop::Fault(f)) => {
                    prev = None;
                    if interrupt::raise(&mut self.core, f).is_err() {
                        return VmExit::Shutdown;
                    }
                    continue;
                }
                Err(_) => return self.failure(),
            };
            let block = self.cache.get(slot);
            let epoch = self.core.tlb.epoch;
            let entry = match &mut self.jit {
                Some(j) => j.entry(&self.core, block, slot),
                None => None,
            };
            if let (Some(j), Some(t)) = (&self.jit, entry) {
                let keys = self.chain.keys(&self.core, self.cache.link_epoch);
                let key = if block.global { keys.global } else { keys.all };
                if let Some(p) = link {
                    j.link(p, t, key);
                    self.stats.linked += 1;
                }
                j.entered(self.core.cpu.rip, t, key);
                let budget = if self.maybe_irq && self.core.cpu.flags.has(flags::IF) {
                    0
                } else {
                    CHAIN_BUDGET
                };
                // SAFETY: `t` came from `j.entry` for this core's block
                // just above; linking and `entered` only patch link slots,
                // so the buffer and the block cache are as they were.
                let exit = unsafe {
                    jit::run(
                        &mut self.core,
                        j,
                        t,
                        keys,
                        budget,
                        self.maybe_irq,
                        &self.signal,
                    )
                };
                n = n.wrapping_add(exit.chained);
                let st = &mut self.stats;
                st.translated += 1;
                st.chained += u64::from(exit.chained);
                st.no_budget += u64::from(budget == 0);
                match (&exit.outcome, exit.link) {
                    (jit::Outcome::Done(_), Some(_)) => st.static_exit += 1,
                    (jit::Outcome::Done(_), None) => st.indirect_exit += 1,
                    (jit::Outcome::End, _) => st.end += 1,
                    (jit::Outcome::After(_), _) => st.after += 1,
                    (jit::Outcome::Stopped(..), _) => st.stopped += 1,
                }
                let Some(last) = self.cache.try_get(exit.slot) else {
                    // Translated code only names slots of live blocks.
                    return self.failure();
                };
                let end = finish_translated(&mut self.core, last, exit.outcome, &self.signal);
                let chains = matches!(end, BlockEnd::Next | BlockEnd::Again);
                prev = chains.then_some(exit.slot);
                pending = if chains { j.pending(exit.link) } else { None };
                if let Some(e) = self.after_block(end) {
                    return e;
                }
                continue;
            }
            self.stats.interpreted += 1;
            let mut end = run_block(&mut self.core, block, &self.signal);
            // A block that branched back to its own start (a tight loop)
            // runs again without a lookup while nothing it was checked
            // against changed; a few rounds, then interrupts get a look.
            let mut rounds = 0;
            while matches!(end, BlockEnd::Again)
                && rounds < SELF_LOOP_ROUNDS
                && self.core.tlb.epoch == epoch
                && !self.signal.attention.load(Ordering::Relaxed)
                && crate::cache::still_valid(&self.core, block)
            {
                end = run_block(&mut self.core, block, &self.signal);
                rounds += 1;
            }
            prev = matches!(end, BlockEnd::Next | BlockEnd::Again).then_some(slot);
            if let Some(e) = self.after_block(end) {
                return e;
            }
        }
    }
}

/// How a block's run ended.
enum BlockEnd {
    /// Go on with the block at RIP.
    Next,
    /// The block branched back to its own start.
    Again,
    /// Go on at RIP, but the state changed in a way (an instruction that
    /// ends blocks, a fault, a write to code) that rules out chaining.
    Other,
    Halt,
    /// A device write came with a kick from the VMM.
    Kicked,
    Shutdown,
    Unsupported,
}

/// Runs the instructions of `block` until it ends, one faults or state
/// changes that invalidate the rest of it. Compiled handlers leave RIP
/// alone unless they branch; it is set wherever the block stops.
#[inline(always)]
fn run_block(core: &mut Core, block: &crate::cache::Block, signal: &Signal) -> BlockEnd {
    let mut done = 0;
    let end = 'run: {
        let mut last: Option<&crate::fast::Fast> = None;
        for (ins, f) in block.instrs.iter().zip(&block.fast) {
            match (f.h)(core, f, ins) {
                Ok(()) => {
                    done += 1;
                    last = Some(f);
                    if let Some(end) = after_instruction(core, f, block.lin, signal) {
                        break 'run end;
                    }
                }
                Err(stop) => {
                    let (n, end) = on_stop(core, f, stop, signal);
                    done += n;
                    break 'run end;
                }
            }
        }
        if let Some(f) = last {
            if !f.sets_rip {
                core.cpu.rip = f.next;
            }
        }
        BlockEnd::Next
    };
    core.retired += done;
    end
}

/// Whether the block must stop after instruction `f` completed, and how:
/// a device write that came with a kick, a write to code, a taken branch
/// (a compiled one back to the block's start at `block_lin`, 64-bit code
/// where RIP is linear, may run again at once). RIP is set where it
/// stops.
#[inline(always)]
fn after_instruction(
    core: &mut Core,
    f: &crate::fast::Fast,
    block_lin: u64,
    signal: &Signal,
) -> Option<BlockEnd> {
    if core.device_written || core.code_written {
        if !f.sets_rip {
            core.cpu.rip = f.next;
        }
        if std::mem::take(&mut core.device_written) && signal.kicked.load(Ordering::SeqCst) {
            return Some(BlockEnd::Kicked);
        }
        if std::mem::take(&mut core.code_written) {
            return Some(BlockEnd::Other);
        }
    }
    if f.sets_rip && core.cpu.rip != f.next {
        if f.kind != crate::fast::Kind::Generic && core.cpu.rip == block_lin {
            return Some(BlockEnd::Again);
        }
        return Some(BlockEnd::Next);
    }
    None
}

/// What the block loop does when instruction `f` stops with `stop`: the
/// instructions it retires (1 when it completed) and how the block ends.
fn on_stop(core: &mut Core, f: &crate::fast::Fast, stop: Stop, signal: &Signal) -> (u64, BlockEnd) {
    match stop {
        Stop::EndBlock => {
            core.code_written = false;
            if std::mem::take(&mut core.device_written) && signal.kicked.load(Ordering::SeqCst) {
                return (1, BlockEnd::Kicked);
            }
            (1, BlockEnd::Other)
        }
        Stop::Fault(fault) => {
            core.cpu.rip = f.ip;
            if interrupt::raise(core, fault).is_err() {
                return (0, BlockEnd::Shutdown);
            }
            (0, BlockEnd::Other)
        }
        Stop::Halt => (1, BlockEnd::Halt),
        Stop::Shutdown => (0, BlockEnd::Shutdown),
        Stop::Unsupported => {
            core.cpu.rip = f.ip;
            (0, BlockEnd::Unsupported)
        }
    }
}

/// Ends a run of translated code ([`crate::jit`]) that stopped in `block`
/// as [`run_block`] would have ended that block.
fn finish_translated(
    core: &mut Core,
    block: &crate::cache::Block,
    outcome: jit::Outcome,
    signal: &Signal,
) -> BlockEnd {
    let (done, end) = match outcome {
        jit::Outcome::Done(n) => (n as u64, BlockEnd::Next),
        jit::Outcome::End => {
            // Nothing branched away (that ends with `After`), so RIP is
            // past the last instruction (a native Jcc not taken leaves it
            // unset).
            if let Some(f) = block.fast.last() {
                core.cpu.rip = f.next;
            }
            (block.fast.len() as u64, BlockEnd::Next)
        }
        jit::Outcome::After(i) => {
            let f = &block.fast[i];
            let end = after_instruction(core, f, block.lin, signal).unwrap_or_else(|| {
                // A device write without a kick: the interpreter would go
                // on inside the block; going on at the next block is the
                // same.
                if !f.sets_rip {
                    core.cpu.rip = f.next;
                }
                BlockEnd::Other
            });
            (i as u64 + 1, end)
        }
        jit::Outcome::Stopped(i, stop) => {
            let (n, end) = on_stop(core, &block.fast[i], stop, signal);
            (i as u64 + n, end)
        }
    };
    core.retired += done;
    end
}

fn seg_out(s: &hypervisor::Segment) -> hypervisor::Segment {
    *s
}

impl Vcpu for SoftVcpu {
    fn index(&self) -> usize {
        self.core.index
    }

    fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<()> {
        self.core.cpuid = entries.to_vec();
        self.core.features = crate::cpuid::Features::from_cpuid(entries);
        Ok(())
    }

    fn set_msrs(&mut self, msrs: &[(u32, u64)]) -> Result<()> {
        for &(i, v) in msrs {
            if i == crate::cpu::msr::TSC {
                // Host-initiated: sets the TSC without moving TSC_ADJUST.
                self.core.cpu.msr.tsc_offset = v.wrapping_sub(host_tsc());
                continue;
            }
            if !exec::system::wrmsr_value(&mut self.core, i, v) {
                log::debug!("soft: ignoring write of unmodelled msr {i:#x}");
            }
        }
        Ok(())
    }

    fn get_msr(&mut self, index: u32) -> Result<u64> {
        exec::system::rdmsr_value(&self.core, index).ok_or_else(|| {
            hypervisor::Error::Engine(format!("soft engine: msr {index:#x} is not modelled"))
        })
    }

    fn regs(&mut self) -> Result<Regs> {
        let c = &self.core.cpu;
        let g = &c.gpr;
        Ok(Regs {
            rax: g[0],
            rcx: g[1],
            rdx: g[2],
            rbx: g[3],
            rsp: g[4],
            rbp: g[5],
            rsi: g[6],
            rdi: g[7],
            r8: g[8],
            r9: g[9],
            r10: g[10],
            r11: g[11],
            r12: g[12],
            r13: g[13],
            r14: g[14],
            r15: g[15],
            rip: c.rip,
            rflags: c.flags.get(),
        })
    }

    fn set_regs(&mut self, r: &Regs) -> Result<()> {
        let c = &mut self.core.cpu;
        c.gpr = [
            r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ];
        c.rip = r.rip;
        c.flags.set(r.rflags);
        Ok(())
    }

    fn special_regs(&mut self) -> Result<SpecialRegs> {
        let c = &self.core.cpu;
        Ok(SpecialRegs {
            cs: seg_out(&c.seg[1]),
            ds: seg_out(&c.seg[3]),
            es: seg_out(&c.seg[0]),
            fs: seg_out(&c.seg[4]),
            gs: seg_out(&c.seg[5]),
            ss: seg_out(&c.seg[2]),
            tr: c.tr,
            ldt: c.ldtr,
            gdt: c.gdtr,
            idt: c.idtr,
            cr0: c.cr0,
            cr2: c.cr2,
            cr3: c.cr3,
            cr4: c.cr4,
            cr8: self
                .core
                .shared
                .irq
                .get()
                .map(|i| u64::from(i.tpr(self.core.index) >> 4))
                .unwrap_or(0),
            efer: c.efer,
            apic_base: c.apic_base,
        })
    }

    fn set_special_regs(&mut self, s: &SpecialRegs) -> Result<()> {
        let c = &mut self.core.cpu;
        c.seg = [s.es, s.cs, s.ss, s.ds, s.fs, s.gs];
        c.tr = s.tr;
        c.ldtr = s.ldt;
        c.gdtr = s.gdt;
        c.idtr = s.idt;
        c.cr0 = s.cr0;
        c.cr2 = s.cr2;
        c.cr3 = s.cr3;
        c.cr4 = s.cr4;
        c.efer = s.efer;
        if s.apic_base != 0 {
            c.apic_base = s.apic_base;
        }
        if let Some(i) = self.core.shared.irq.get() {
            i.set_tpr(self.core.index, ((s.cr8 & 0xf) << 4) as u8);
        }
        self.core.tlb.flush();
        // The VMM may have rewritten guest memory behind the engine's
        // back (loading images, restoring snapshots): decode afresh.
        self.cache.clear();
        Ok(())
    }

    fn fpu(&mut self) -> Result<FpuState> {
        let f = &self.core.cpu.fpu;
        Ok(FpuState {
            st: f.st,
            fcw: f.fcw,
            fsw: f.fsw,
            ftw: f.ftw,
            last_opcode: f.fop,
            last_ip: f.fip,
            last_dp: f.fdp,
            xmm: f.xmm.map(|x| x.to_le_bytes()),
            mxcsr: f.mxcsr,
        })
    }

    fn set_fpu(&mut self, s: &FpuState) -> Result<()> {
        let f = &mut self.core.cpu.fpu;
        f.st = s.st;
        f.fcw = s.fcw;
        f.fsw = s.fsw;
        f.ftw = s.ftw;
        f.fop = s.last_opcode;
        f.fip = s.last_ip;
        f.fdp = s.last_dp;
        f.xmm = s.xmm.map(u128::from_le_bytes);
        f.mxcsr = s.mxcsr;
        // As KVM_SET_FPU: the x87 and SSE components count as in use.
        crate::exec::xsave::mark(f, crate::exec::xsave::X87 | crate::exec::xsave::SSE);
        Ok(())
    }

    fn xsave(&mut self) -> Result<XsaveState> {
        Ok(crate::exec::xsave::state(&self.core.cpu.fpu))
    }

    fn set_xsave(&mut self, state: &XsaveState) -> Result<()> {
        crate::exec::xsave::set_state(&mut self.core.cpu.fpu, state)
            .map_err(|e| hypervisor::Error::Engine(format!("soft engine: {e}")))
    }

    fn read_virtual(&mut self, gva: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = (buf.len() - done).min(16);
            self.core
                .read_lin(
                    gva.wrapping_add(done as u64),
                    &mut buf[done..done + n],
                    Access::Read,
                    true,
                )
                .map_err(|_| {
                    hypervisor::Error::Engine(format!("soft engine: {gva:#x} does not translate"))
                })?;
            done += n;
        }
        Ok(())
    }

    fn run(&mut self) -> Result<VmExit> {
        if self.signal.kicked.load(Ordering::SeqCst) {
            return Ok(VmExit::Interrupted);
        }
        Ok(self.run_loop())
    }

    fn kicker(&self) -> Arc<dyn VcpuKicker> {
        self.signal.clone()
    }

    fn instructions_retired(&self) -> Option<u64> {
        Some(self.core.retired)
    }
}
