import DeviceModel
import Devices
import HostSystem
import Hypervisor
import Logging
import Synchronization

/// The 16550 on the port bus, with its transmit register's writes waiting in the
/// hypervisor's coalesced ring while the guest cannot tell.
///
/// A Linux guest writes each console byte as an LSR read (is the transmitter empty?) and a
/// THR write: two exits per byte, most of a booting guest's exits. While the UART's THR-empty
/// interrupt is off and it is not looped back (``Serial16550/transmitMayWait``), a THR write
/// has no effect the guest can see before its next exit, so it may wait in the ring: the next
/// LSR read's exit hands it to the UART first, and a console byte costs one exit.
///
/// A timer drains the ring every 20 ms while the zone is registered, so the output of a guest
/// that writes and halts (no exit follows) still comes out within that. After half a second
/// without a transmitted byte the zone goes and the timer stops: the next byte exits and
/// registers it again, so an idle VM has neither. A guest that turns the THR-empty interrupt
/// on or loops the UART back loses the zone on that write's own exit, before it can write a
/// byte whose interrupt would come late.
final class SerialTransmitCoalescing: BusDevice {
    /// The UART this forwards every access to.
    let uart: Serial16550
    /// How often the ring is drained while the zone is registered.
    static let tickNanoseconds: UInt64 = 20_000_000
    /// Ticks without a transmitted byte after which the zone goes (half a second).
    static let idleTicks = 25

    private let vm: any VirtualMachine
    /// Hands a write from the ring to its bus, as a vCPU's drain does.
    private let handOver: @Sendable (CoalescedWrite) -> Void
    private let port: UInt16
    private let timer: TimerFD
    private let logger: Logger
    /// Whether a byte reached the data register (THR or DLL) since the timer's last tick.
    private let transmitted = Atomic<Bool>(false)
    /// Whether the zone is registered: changed only under `state`'s lock, read without it on
    /// the write path.
    private let registered = Atomic<Bool>(false)
    private let state = Mutex(Control())

    private struct Control {
        /// The hypervisor cannot coalesce (or refused once): every write exits.
        var unavailable = false
        var quietTicks = 0
    }

    var name: String { uart.name }

    /// Wraps `uart`, mapped at `port`, for `vm`; the drain timer runs on `events` and gives
    /// each write it takes from the ring to `handOver` (to the port or MMIO bus).
    init(uart: Serial16550, port: UInt16, vm: any VirtualMachine, events: EventManager, logger: Logger,
         handOver: @escaping @Sendable (CoalescedWrite) -> Void) throws {
        self.uart = uart
        self.port = port
        self.vm = vm
        self.handOver = handOver
        self.logger = logger
        timer = try TimerFD()
        try events.add(timer.rawValue, events: [.readable]) { [weak self] _ in self?.tick() }
    }

    /// Whether writes to the data register wait in the ring now.
    var isCoalescing: Bool { registered.load(ordering: .acquiring) }

    func read(offset: UInt64, size: Int) -> UInt64 {
        uart.read(offset: offset, size: size)
    }

    func write(offset: UInt64, size: Int, value: UInt64) {
        uart.write(offset: offset, size: size, value: value)
        switch offset {
        case Serial16550.Register.data.rawValue:
            transmitted.store(true, ordering: .relaxed)
            if !registered.load(ordering: .relaxed) { start() }
        case Serial16550.Register.interruptEnable.rawValue, Serial16550.Register.modemControl.rawValue:
            if registered.load(ordering: .relaxed), !uart.transmitMayWait { stop() }
        default:
            break
        }
    }

    /// Registers the zone and starts the timer, when the UART allows it.
    private func start() {
        state.withLock { control in
            guard !registered.load(ordering: .relaxed), !control.unavailable, uart.transmitMayWait else { return }
            do throws(HypervisorError) {
                guard try vm.registerCoalescedPortIO(port: port, length: 1) else {
                    control.unavailable = true
                    return
                }
            } catch {
                control.unavailable = true
                logger.warning("serial port: its writes exit one by one: \(error)")
                return
            }
            do throws(SystemError) {
                try timer.arm(afterNanoseconds: Self.tickNanoseconds, intervalNanoseconds: Self.tickNanoseconds)
            } catch {
                // Without the timer a byte could wait for the next exit: take the zone back.
                try? vm.unregisterCoalescedPortIO(port: port, length: 1)
                control.unavailable = true
                logger.warning("serial port: its writes exit one by one (no drain timer: \(error))")
                return
            }
            control.quietTicks = 0
            registered.store(true, ordering: .releasing)
        }
    }

    /// Removes the zone: writes exit again from now on. Writes the ring still holds are
    /// handed over by the timer's next tick, which then stops it.
    private func stop() {
        state.withLock { _ in
            guard registered.load(ordering: .relaxed) else { return }
            unregister()
        }
    }

    /// Takes the zone back; the caller holds `state`'s lock.
    private func unregister() {
        do throws(HypervisorError) {
            try vm.unregisterCoalescedPortIO(port: port, length: 1)
        } catch {
            // The zone is gone or was never there: nothing waits in it any more.
            logger.warning("serial port: \(error)")
        }
        registered.store(false, ordering: .releasing)
    }

    /// The timer: hands what waits in the ring over, then counts a quiet tick or stops.
    private func tick() {
        _ = timer.expirations()
        // Read before the drain: a zone removed after this read has its last writes handed
        // over by the next tick, which then finds it gone.
        let wasRegistered = registered.load(ordering: .acquiring)
        vm.drainCoalescedWrites(handOver)
        state.withLock { control in
            let isRegistered = registered.load(ordering: .relaxed)
            guard wasRegistered, isRegistered else {
                // The zone went before this tick's drain: nothing can wait in it any more.
                if !isRegistered { try? timer.disarm() }
                return
            }
            if transmitted.exchange(false, ordering: .relaxed) {
                control.quietTicks = 0
                return
            }
            control.quietTicks += 1
            if control.quietTicks >= Self.idleTicks { unregister() }
        }
    }
}
