/// The data of a port-I/O or MMIO exit, read and written in place in the vCPU's shared
/// run structure, so that handling an exit allocates nothing.
///
/// An `ExitData` is valid only until the vCPU runs again. For an `in` or an MMIO read, the
/// handler stores the value the guest reads with `set(_:)` before the next `run()`.
public struct ExitData: @unchecked Sendable {
    // SAFETY: points into the vCPU's kvm_run mapping (or a test buffer) that outlives the
    // exit; `size * count` bytes are valid there.
    private let storage: UnsafeMutableRawPointer
    /// The access width in bytes (1, 2, 4 or 8).
    public let size: Int
    /// How many accesses of `size` bytes (more than 1 for `rep ins`/`rep outs`).
    public let count: Int

    /// Wraps `size * count` bytes at `storage`. Used by hypervisor backends and test fakes.
    public init(storage: UnsafeMutableRawPointer, size: Int, count: Int = 1) {
        self.storage = storage
        self.size = size
        self.count = count
    }

    /// The first access's value, little-endian, zero-extended to 64 bits.
    public var value: UInt64 { value(at: 0) }

    /// The value of access number `index` (`0..<count`).
    public func value(at index: Int) -> UInt64 {
        precondition(index >= 0 && index < count, "exit data index \(index) outside 0..<\(count)")
        var result: UInt64 = 0
        let base = storage + index * size
        for byte in 0..<min(size, 8) {
            result |= UInt64(base.load(fromByteOffset: byte, as: UInt8.self)) << (8 * UInt64(byte))
        }
        return result
    }

    /// Stores `value` (little-endian, truncated to `size` bytes) as access number `index`.
    public func set(_ value: UInt64, at index: Int = 0) {
        precondition(index >= 0 && index < count, "exit data index \(index) outside 0..<\(count)")
        let base = storage + index * size
        for byte in 0..<min(size, 8) {
            base.storeBytes(of: UInt8(truncatingIfNeeded: value >> (8 * UInt64(byte))), toByteOffset: byte, as: UInt8.self)
        }
    }

    /// A copy of all `size * count` bytes.
    public var bytes: [UInt8] {
        Array(UnsafeRawBufferPointer(start: storage, count: size * count))
    }

    /// Replaces the bytes with `bytes` (at most `size * count` are used; missing ones become 0).
    public func setBytes(_ bytes: some Sequence<UInt8>) {
        let total = size * count
        var written = 0
        for byte in bytes where written < total {
            storage.storeBytes(of: byte, toByteOffset: written, as: UInt8.self)
            written += 1
        }
        while written < total {
            storage.storeBytes(of: 0, toByteOffset: written, as: UInt8.self)
            written += 1
        }
    }
}

/// Why the guest asked the VMM to stop or restart (`KVM_EXIT_SYSTEM_EVENT`).
public enum SystemEvent: Equatable, Sendable {
    /// The guest powered off (for example PSCI `SYSTEM_OFF`).
    case shutdown
    /// The guest asked for a reset.
    case reset
    /// The guest reported a crash.
    case crash
    /// Another event type, with its number.
    case other(UInt32)
}

/// Why KVM could not continue running the vCPU (`KVM_EXIT_INTERNAL_ERROR`).
public struct InternalError: Equatable, Sendable, CustomStringConvertible {
    /// The KVM sub-error (`KVM_INTERNAL_ERROR_*`).
    public let suberror: UInt32
    /// Extra words the kernel attached.
    public let data: [UInt64]

    /// Creates the value.
    public init(suberror: UInt32, data: [UInt64]) {
        self.suberror = suberror
        self.data = data
    }

    /// The sub-error's name.
    public var name: String {
        switch suberror {
        case 1: return "emulation failure"
        case 2: return "simultaneous exceptions"
        case 3: return "event delivery failure"
        case 4: return "unexpected exit reason"
        default: return "internal error \(suberror)"
        }
    }

    /// `"emulation failure [data…]"`.
    public var description: String {
        data.isEmpty ? name : name + " [" + data.map { hex($0) }.joined(separator: ", ") + "]"
    }
}

/// The state reported with a debug exit (breakpoint, single step).
public struct DebugExit: Equatable, Sendable {
    /// The exception vector (1 for #DB, 3 for #BP).
    public let exception: UInt32
    /// The guest instruction pointer.
    public let pc: UInt64
    /// DR6 at the exit.
    public let dr6: UInt64
    /// DR7 at the exit.
    public let dr7: UInt64

    /// Creates the value.
    public init(exception: UInt32, pc: UInt64, dr6: UInt64, dr7: UInt64) {
        self.exception = exception
        self.pc = pc
        self.dr6 = dr6
        self.dr7 = dr7
    }
}

/// Why `VirtualCPU.run()` returned.
public enum VCPUExit: Sendable {
    /// The guest read `data.size` bytes from an I/O port; store the value with `data.set(_:)`.
    case ioIn(port: UInt16, data: ExitData)
    /// The guest wrote `data` to an I/O port.
    case ioOut(port: UInt16, data: ExitData)
    /// The guest read unbacked guest-physical memory; store the value with `data.set(_:)`.
    case mmioRead(address: UInt64, data: ExitData)
    /// The guest wrote unbacked guest-physical memory.
    case mmioWrite(address: UInt64, data: ExitData)
    /// The guest executed `hlt` with no in-kernel interrupt controller to wait on.
    case halt
    /// The guest triple-faulted (x86 shutdown); a real machine resets.
    case shutdown
    /// The guest asked for power-off, reset or reported a crash.
    case systemEvent(SystemEvent)
    /// KVM could not go on (for example an instruction it cannot emulate).
    case internalError(InternalError)
    /// The hardware refused to enter the guest (invalid state).
    case failEntry(hardwareReason: UInt64, cpu: UInt32)
    /// A signal or a kick interrupted the run; nothing happened in the guest.
    case interrupted
    /// A breakpoint or single step.
    case debug(DebugExit)
    /// The guest can take an interrupt now (requested interrupt window).
    case interruptWindowOpen
    /// The guest made a hypercall KVM passed to user space.
    case hypercall(number: UInt64)
    /// The in-kernel IOAPIC signalled an end-of-interrupt on a vector (split irqchip).
    case ioapicEOI(vector: UInt8)
    /// An exit reason this backend does not decode, with its number.
    case unknown(reason: UInt32)
}
