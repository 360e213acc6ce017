//! The interrupt line a device drives. The VMM implements [`IrqLine`] on top
//! of `hypervisor::Vm::set_irq_line` (one object per GSI), so devices never
//! see the engine.

/// One interrupt input of the interrupt controllers.
pub trait IrqLine: Send + Sync {
    /// Drives the line to `high` (level-triggered devices keep it there
    /// while their condition holds).
    fn set_level(&self, high: bool);

    /// Raises and lowers the line: one edge, for edge-triggered devices.
    fn pulse(&self) {
        self.set_level(true);
        self.set_level(false);
    }
}
