import CLinux
import DeviceModel
import Devices
import HostSystem
import Hypervisor
import Logging

/// The platform devices of a VM on the port-I/O bus, each attached by one short function.
struct LegacyDevices {
    /// The 16550 at 0x3F8 (absent with `--serial off`).
    var serial: Serial16550?
    /// Keeps the serial port's host side (terminal, pty, file) alive and restorable.
    var serialHost: HostEndpoint?
    /// Carries host input into the serial port.
    var serialInput: HostInputPump?
    /// The i8042 reset controller.
    var i8042: I8042?
    /// The CMOS RTC.
    var cmos: CMOSRTC?
    /// The debug port 0x80.
    var debugPort: DebugPort?
    /// The ACPI sleep/reset registers (port 0x600).
    var acpiShutdown: ACPIShutdownDevice?
    /// The ACPI PM timer (port 0x608).
    var pmTimer: ACPIPMTimer?
}

enum LegacyDeviceAttach {
    /// Attaches the 16550 UART at 0x3F8, IRQ 4, wired to the host as `config` says; its
    /// transmit register's writes wait in the coalesced ring while the guest cannot tell
    /// (``SerialTransmitCoalescing``; `mmio` takes the ring's MMIO writes the timer drains).
    static func attachSerial(_ config: ConsoleConfig, vm: any VirtualMachine, pio: Bus, mmio: Bus, events: EventManager,
                             logger: Logger) throws -> (Serial16550?, HostEndpoint?, HostInputPump?) {
        guard let host = try HostEndpoint.open(config, what: "serial port", logger: logger) else { return (nil, nil, nil) }
        let line = try IRQFDLine(vm: vm, gsi: Serial16550.com1IRQ)
        let serial = Serial16550(interrupt: line, output: host.output ?? DiscardingSerialOutput())
        // The buses weakly: the port bus holds this device, and a cycle would keep a stopped VM's
        // devices (and their disk locks) alive.
        let port = try SerialTransmitCoalescing(uart: serial, port: UInt16(Serial16550.com1Base), vm: vm, events: events,
                                                logger: logger) { [weak pio, weak mmio] write in
            (write.isPortIO ? pio : mmio)?.write(address: write.address, size: write.size, value: write.value)
        }
        try pio.insert(port, base: Serial16550.com1Base, length: Serial16550.registerCount)
        let pump = try host.startInput(into: .serial(serial), name: "serial", events: events, logger: logger)
        return (serial, host, pump)
    }

    /// Attaches the i8042 at 0x61 (4 ports); its reset pulse reboots the VM.
    static func attachI8042(pio: Bus, exits: ExitSignal) throws -> I8042 {
        let device = I8042(onReset: { exits.report(.reset) })
        try pio.insert(device, base: I8042.portBase, length: I8042.portLength)
        return device
    }

    /// Attaches the CMOS RTC at 0x70/0x71 with the RAM sizes Linux reads from it.
    static func attachCMOS(pio: Bus, memoryBelow4G: UInt64, memoryAbove4G: UInt64, exits: ExitSignal) throws -> CMOSRTC {
        let device = CMOSRTC(memoryBelow4G: memoryBelow4G, memoryAbove4G: memoryAbove4G, onReset: { exits.report(.reset) })
        try pio.insert(device, base: CMOSRTC.portBase, length: CMOSRTC.portLength)
        return device
    }

    /// Attaches the debug port 0x80, logging boot progress codes with timestamps.
    static func attachDebugPort(pio: Bus, logger: Logger) throws -> DebugPort {
        let device = DebugPort(log: { line in logger.info("\(line)") })
        try pio.insert(device, base: DebugPort.port, length: DebugPort.portLength)
        return device
    }
}

extension LegacyDeviceAttach {
    /// Attaches the ACPI sleep and reset registers the FADT points at: S5 powers the VM off,
    /// the reset value reboots it.
    static func attachACPIShutdown(pio: Bus, exits: ExitSignal) throws -> ACPIShutdownDevice {
        let device = ACPIShutdownDevice(onShutdown: { exits.report(.shutdown) }, onReset: { exits.report(.reset) })
        try pio.insert(device, base: ACPIShutdownDevice.portBase, length: ACPIShutdownDevice.portLength)
        return device
    }

    /// Attaches the ACPI PM timer (3.579545 MHz) the FADT points at.
    static func attachPMTimer(pio: Bus) throws -> ACPIPMTimer {
        let device = ACPIPMTimer()
        try pio.insert(device, base: ACPIPMTimer.portBase, length: ACPIPMTimer.portLength)
        return device
    }
}

