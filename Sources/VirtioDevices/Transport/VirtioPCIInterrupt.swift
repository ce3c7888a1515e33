import PCI
import Synchronization

/// The interrupt half of the virtio-pci transport: the MSI-X table, the vector the
/// driver chose for configuration changes and for each queue, and the ISR byte.
///
/// It has its own lock so that a device can signal while the transport's register
/// lock is free; it only ever calls the MSI-X routing, never the device.
final class VirtioPCIInterrupt: VirtioInterrupt {
    /// `VIRTIO_MSI_NO_VECTOR`: no vector is assigned.
    static let noVector: UInt16 = 0xffff
    /// ISR bit 0: a queue has used buffers.
    static let isrQueue: UInt8 = 0x1
    /// ISR bit 1: the configuration changed.
    static let isrConfig: UInt8 = 0x2

    struct State {
        var msix: MSIXConfiguration
        var configVector: UInt16 = VirtioPCIInterrupt.noVector
        var queueVectors: [UInt16]
        var isr: UInt8 = 0
        var configGeneration: UInt8 = 0
    }

    let state: Mutex<State>

    init(msix: MSIXConfiguration, queueCount: Int) {
        state = Mutex(State(msix: msix, queueVectors: Array(repeating: Self.noVector, count: queueCount)))
    }

    /// Sets ISR bit 0 and fires the queue's vector.
    func signalQueue(_ queue: Int) {
        state.withLock { state in
            state.isr |= Self.isrQueue
            guard state.queueVectors.indices.contains(queue) else { return }
            Self.fire(state.queueVectors[queue], msix: &state.msix)
        }
    }

    /// Sets ISR bit 1, bumps the configuration generation and fires the config vector.
    func signalConfig() {
        state.withLock { state in
            state.isr |= Self.isrConfig
            state.configGeneration &+= 1
            Self.fire(state.configVector, msix: &state.msix)
        }
    }

    /// Reads the ISR byte and clears it, as a guest read of the ISR region does.
    func readAndClearISR() -> UInt8 {
        state.withLock { state in
            defer { state.isr = 0 }
            return state.isr
        }
    }

    /// The vector the driver may store: a table index or `noVector` for anything else.
    func checkedVector(_ vector: UInt16) -> UInt16 {
        state.withLock { Int(vector) < $0.msix.vectorCount ? vector : Self.noVector }
    }

    /// Back to the reset state: no vectors assigned, ISR clear (the MSI-X table is
    /// configuration-space state and survives a virtio reset).
    func reset() {
        state.withLock { state in
            state.configVector = Self.noVector
            for i in state.queueVectors.indices { state.queueVectors[i] = Self.noVector }
            state.isr = 0
        }
    }

    private static func fire(_ vector: UInt16, msix: inout MSIXConfiguration) {
        guard vector != noVector else { return }
        msix.trigger(vector: Int(vector))
    }
}
