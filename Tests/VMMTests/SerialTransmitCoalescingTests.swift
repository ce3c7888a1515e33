import DeviceModel
import Devices
import Foundation
import HostSystem
import Hypervisor
import HypervisorTesting
import Logging
import Synchronization
import Testing
@testable import VMM

/// The bytes a UART transmitted.
final class CollectedSerialOutput: SerialOutput {
    private let bytes = Mutex<[UInt8]>([])
    var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
    func write(_ byte: UInt8) { bytes.withLock { $0.append(byte) } }

    /// Waits at most `seconds` for the output to read `expected`.
    func wait(for expected: String, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if text == expected { return true }
            usleep(2_000)
        }
        return text == expected
    }
}

@Suite("The serial port's transmit writes in KVM's coalesced ring", .serialized,
       .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
struct SerialTransmitCoalescingTests {
    /// A tiny guest with the UART at 0x3F8 behind the coalescing, a running event loop for its
    /// timer, and the output it collects.
    final class Rig {
        let guest: TinyGuest
        let events: EventManager
        let output = CollectedSerialOutput()
        let pio = Bus(name: "pio")
        let port: SerialTransmitCoalescing

        init(program: [UInt8]) throws {
            guest = try TinyGuest(hypervisor: KVMHypervisor())
            events = try EventManager()
            let uart = Serial16550(interrupt: CountingLine(), output: output)
            let pio = self.pio
            port = try SerialTransmitCoalescing(uart: uart, port: 0x3F8, vm: guest.vm, events: events, logger: Logger(label: "test")) { [weak pio] write in
                pio?.write(address: write.address, size: write.size, value: write.value)
            }
            try pio.insert(port, base: 0x3F8, length: 8)
            try events.start(name: "test-serial-timer")
            guest.load(program, at: 0x1000)
            try guest.startRealMode(ip: 0x1000)
        }

        deinit { events.stop() }

        /// Runs the vCPU to its next exit as the VMM's vCPU loop does (the ring drained first);
        /// returns the port of an OUT, -1 for a halt.
        func step() throws -> Int {
            let exit = try guest.vcpu.run()
            guest.vcpu.drainCoalescedWrites { write in pio.write(address: write.address, size: write.size, value: write.value) }
            switch exit {
            case .ioOut(let port, let data):
                for i in 0..<data.count { pio.write(address: UInt64(port), size: data.size, value: data.value(at: i)) }
                return Int(port)
            case .halt:
                return -1
            default:
                Issue.record("unexpected exit \(exit)")
                return -2
            }
        }
    }

    @Test("A byte registers the zone; the next ones wait in the ring; the timer hands over what a halted guest wrote")
    func haltedGuestIsHeard() throws {
        // mov dx,0x3f8; mov al,'a'; out dx,al; mov al,'b'; out dx,al; mov al,'c'; out dx,al; hlt
        let rig = try Rig(program: [0xBA, 0xF8, 0x03, 0xB0, 0x61, 0xEE, 0xB0, 0x62, 0xEE, 0xB0, 0x63, 0xEE, 0xF4])
        guard try rig.step() == 0x3F8 else { Issue.record("the first byte should exit"); return }
        guard rig.port.isCoalescing else { Issue.record("this host's KVM has no coalesced port I/O"); return }
        #expect(rig.output.text == "a")
        #expect(try rig.step() == -1, "the next two bytes went into the ring: the halt is the next exit")
        #expect(rig.output.wait(for: "abc", seconds: 5), "the timer drained the ring: \(rig.output.text)")
    }

    @Test("The guest turning the THR-empty interrupt on takes the zone back at once; a quiet port gives it back")
    func interruptEnableStopsCoalescing() throws {
        // mov dx,0x3f8; mov al,'a'; out dx,al; mov al,'b'; out dx,al; inc dx; mov al,2; out dx,al;
        // dec dx; mov al,'c'; out dx,al; inc dx; xor al,al; out dx,al; dec dx; mov al,'d'; out dx,al; hlt
        let rig = try Rig(program: [0xBA, 0xF8, 0x03, 0xB0, 0x61, 0xEE, 0xB0, 0x62, 0xEE, 0x42, 0xB0, 0x02, 0xEE,
                                    0x4A, 0xB0, 0x63, 0xEE, 0x42, 0x30, 0xC0, 0xEE, 0x4A, 0xB0, 0x64, 0xEE, 0xF4])
        guard try rig.step() == 0x3F8, rig.port.isCoalescing else { Issue.record("this host's KVM has no coalesced port I/O"); return }
        #expect(try rig.step() == 0x3F9, "'b' waited in the ring; the IER write exits")
        #expect(rig.output.text == "ab", "the IER write's exit handed 'b' over first")
        #expect(!rig.port.isCoalescing, "THR-empty interrupts on: writes exit again")
        #expect(try rig.step() == 0x3F8, "'c' exits")
        #expect(!rig.port.isCoalescing, "and does not register the zone while the interrupt is on")
        #expect(try rig.step() == 0x3F9, "the interrupt off again")
        #expect(try rig.step() == 0x3F8, "'d' exits and registers the zone")
        #expect(rig.port.isCoalescing)
        #expect(rig.output.text == "abcd")
        #expect(try rig.step() == -1)
        let deadline = Date().addingTimeInterval(10)
        while rig.port.isCoalescing, Date() < deadline { usleep(10_000) }
        #expect(!rig.port.isCoalescing, "half a second without a byte: the zone went")
    }

    @Test("Bytes a guest writes just before it halts for ever reach the serial file")
    func binaryHaltedGuestOutput() throws {
        // mov dx,0x3f8; mov al,'!'; out dx,al; mov al,'O'; out dx,al; mov al,'K'; out dx,al; 1: hlt; jmp 1b
        let code: [UInt8] = [0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x21, 0xEE, 0xB0, 0x4F, 0xEE, 0xB0, 0x4B, 0xEE, 0xF4, 0xEB, 0xFD]
        let kernel = try BinaryTests.temporaryFile("halted.elf", TinyKernel.pvhELF(code: code))
        let serial = kernel + ".serial"
        defer { try? FileManager.default.removeItem(atPath: kernel); try? FileManager.default.removeItem(atPath: serial) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: BinaryTests.binary)
        process.arguments = ["--kernel", kernel, "--serial", "file=\(serial)", "--console", "off", "--memory", "size=32M"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { process.terminate(); process.waitUntilExit() }
        let deadline = Date().addingTimeInterval(20)
        var text = ""
        while Date() < deadline {
            text = (try? String(contentsOfFile: serial, encoding: .utf8)) ?? ""
            if text == "!OK" { break }
            usleep(20_000)
        }
        #expect(text == "!OK")
    }
}
