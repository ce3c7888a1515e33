/// The wire from a device to the guest's interrupt controller.
///
/// A device holds one line per interrupt it raises and never knows how delivery works:
/// the VMM injects a KVM irqfd (an eventfd bound to a GSI), a `KVM_IRQ_LINE` call, or in
/// tests a recording fake. Implementations must be cheap and must not call back into the
/// device that owns the line, because devices may signal while holding their own lock.
public protocol InterruptLine: Sendable {
    /// Delivers one edge-triggered interrupt (for an irqfd: writes 1 to the eventfd).
    ///
    /// - Throws: whatever the delivery mechanism reports (for example a failed `write(2)`).
    func trigger() throws

    /// Drives a level-triggered line high (asserted) or low (deasserted).
    ///
    /// The default implementation suits edge-only lines: raising the level calls
    /// ``trigger()`` and lowering it does nothing.
    ///
    /// - Throws: whatever the delivery mechanism reports.
    func setLevel(_ high: Bool) throws
}

extension InterruptLine {
    /// Edge-only fallback: a rising level becomes one ``trigger()``; a falling level is ignored.
    public func setLevel(_ high: Bool) throws {
        if high { try trigger() }
    }
}
