/// Where a virtio console's guest output goes: standard output, a file, a pty, a log.
///
/// The device calls it from the thread that processes the transmit queue (the VMM's
/// event loop, or a vCPU for an emergency write), with the device's transmit lock
/// held so that output keeps the guest's order: never call back into the console
/// from here. The call cannot fail: a backend that cannot take the bytes (a full or
/// closed pty) drops or buffers them itself, so a stuck host terminal never breaks
/// the guest's device.
public protocol ConsoleOutput: Sendable {
    /// Takes the next bytes the guest wrote, in order (never empty).
    func write(_ bytes: [UInt8])
}

/// A ``ConsoleOutput`` that drops everything: the console with nothing attached
/// (Cloud Hypervisor's `--console off` / `null`).
public struct DiscardingConsoleOutput: ConsoleOutput {
    /// Creates the discarding output.
    public init() {}

    /// Drops `bytes`.
    public func write(_ bytes: [UInt8]) {}
}
