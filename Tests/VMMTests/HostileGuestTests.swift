import Foundation
import HypervisorTesting
import Testing

/// Guests that attack the VMM through every door a guest has (port I/O, PCI configuration
/// space, BAR registers, virtqueues), booted by the real `cloud-hypervisor` binary on this
/// host's /dev/kvm. The VMM must survive all of it: the guest still reaches its serial
/// port and powers off cleanly, and the process never crashes or hangs.
///
/// The random guests use a fixed xorshift32 seed, printed in every failure message.
@Suite("Hostile guests on /dev/kvm")
struct HostileGuestTests {
    static let seed: UInt32 = 0x2545_F491

    /// What a hostile guest run produced.
    struct Outcome: CustomStringConvertible {
        var status: Int32
        var serial: String
        var stderr: String
        var seconds: Double

        /// The run for a failure message: status, time, serial output and the end of the log.
        var description: String {
            let printable = String(serial.unicodeScalars.map { $0.isASCII && ($0.value >= 0x20 || $0 == "\n") ? Character($0) : "." })
            return "exit status \(status) after \(String(format: "%.1f", seconds)) s (seed 0x\(String(HostileGuestTests.seed, radix: 16)))\n"
                + "serial output (\(serial.utf8.count) bytes, non-ASCII shown as '.'): \(printable.suffix(3000))\n"
                + "stderr (last 3000 bytes): \(stderr.suffix(3000))"
        }

        /// Whether the VMM ended because the guest powered off (not a timeout, a crash, a
        /// reset loop or a vCPU failure).
        var cleanPowerOff: Bool {
            status == 0 && stderr.contains("the guest shut down") && !stderr.contains("stopped by signal")
                && !stderr.contains("rebooting the VM") && !stderr.contains("Fatal error")
        }
    }

    /// Boots `code` as a PVH kernel with 64 MiB of RAM, the serial port in a file, the
    /// virtio console in another, `-v` logging and `extra` arguments; kills it after
    /// `timeout` seconds.
    static func boot(_ name: String, code: [UInt8], extra: [String] = [], timeout: TimeInterval = 30) throws -> Outcome {
        let kernel = try BinaryTests.temporaryFile("hostile-\(name).elf", TinyKernel.pvhELF(code: code))
        let serial = kernel + ".serial", console = kernel + ".console"
        defer { for path in [kernel, serial, console] { try? FileManager.default.removeItem(atPath: path) } }
        let start = Date()
        let run = try BinaryTests.run(["-v", "--kernel", kernel, "--serial", "file=\(serial)", "--console", "file=\(console)",
                                       "--memory", "size=64M"] + extra, timeout: timeout)
        let output = (try? Data(contentsOf: URL(fileURLWithPath: serial))) ?? Data()
        return Outcome(status: run.status, serial: String(decoding: output, as: UTF8.self), stderr: run.stderr,
                       seconds: Date().timeIntervalSince(start))
    }

    /// The serial output as lines (the random guests print garbage before their markers).
    static func lines(_ serial: String) -> [String] {
        serial.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
    }

    @Test("Random bytes on every I/O port, words and dwords below 0x1000: the VMM survives and the serial port still works",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func randomPortWrites() throws {
        let outcome = try Self.boot("ports", code: HostileGuestPrograms.portHammer(seed: Self.seed))
        #expect(outcome.cleanPowerOff, "\(outcome)")
        #expect(outcome.serial.hasPrefix("PORTS\n"), "\(outcome)")
        #expect(outcome.serial.hasSuffix("\nALIVE\n"), "the UART works after the hammering: \(outcome)")
    }

    @Test("Random PCI configuration writes (0xCF8/0xCFC and ECAM) and BAR register hammering: the VMM survives",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func pciHammering() throws {
        let disk = try BinaryTests.temporaryFile("hostile-pci-disk.raw", [UInt8](repeating: 0, count: 1 << 20))
        defer { try? FileManager.default.removeItem(atPath: disk) }
        let outcome = try Self.boot("pci", code: HostileGuestPrograms.pciHammer(seed: Self.seed), extra: ["--disk", "path=\(disk)"])
        #expect(outcome.cleanPowerOff, "\(outcome)")
        // Host bridge, virtio-rng, virtio-console, virtio-blk.
        let expected = ["PCI", "FUNCTIONS 00000004", "CF8-DONE", "ECAM-DONE", "RESTORED", "BARS-DONE", "RNG-FOUND",
                        "RNG-CHECK-OK", "RNG-WORKS", "ALIVE"]
        let lines = Self.lines(outcome.serial)
        #expect(lines.filter { !$0.hasPrefix("VIRTIO-") } == expected, "\(outcome)")
        // Each virtio function ran with garbage rings, returned some of their chains, and
        // refused others: the garbage reached the queue processing, not only the registers.
        let counts = lines.filter { $0.hasPrefix("VIRTIO-") }.map { line in
            line.split(separator: " ").compactMap { UInt32($0, radix: 16) }
        }
        #expect(counts.count == 3 && counts.allSatisfy { $0.count == 3 && !$0.contains(0) }, "\(outcome)")
    }

    @Test("A BAR moved onto ECAM or another device's BAR and then away leaves ECAM and that device mapped",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func barMovedOntoAnotherWindow() throws {
        let outcome = try Self.boot("relocation", code: HostileGuestPrograms.barRelocation())
        #expect(outcome.cleanPowerOff, "\(outcome)")
        let expected = ["RELOCATION", "CONSOLE-FOUND", "RNG-FOUND", "ECAM-INTACT", "CONSOLE-INTACT", "RNG-CHECK-OK", "RNG-WORKS", "DONE"]
        #expect(Self.lines(outcome.serial) == expected, "\(outcome)")
        // The overlapping mappings were refused, with the reason in the log.
        #expect(outcome.stderr.contains("cannot map BAR 0 at 0xe8000000"), "\(outcome)")
    }

    @Test("Targeted virtio-rng ring attacks set DEVICE_NEEDS_RESET, and the device works again after a reset",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func virtioRingAttacks() throws {
        let outcome = try Self.boot("rings", code: HostileGuestPrograms.rngRingAttacks())
        #expect(outcome.cleanPowerOff, "\(outcome)")
        let expected = [
            "ATTACKS", "RNG-FOUND",
            "LOOP-NEEDS-RESET",
            "OUTSIDE-RAM-NEEDS-RESET",
            "HUGE-LENGTH-NEEDS-RESET",
            // A size that is not a power of two, or above the maximum, is refused at
            // DRIVER_OK; the queue_enable register keeps what the driver wrote.
            "SIZE-3-NEEDS-RESET", "SIZE-3-QUEUE-ENABLED", "SIZE-3-NOTIFIED-NEEDS-RESET",
            "SIZE-32768-NEEDS-RESET", "SIZE-32768-QUEUE-ENABLED",
            "HEAD-RANGE-NEEDS-RESET",
            "INDEX-JUMP-NEEDS-RESET",
            "READ-ONLY-NEEDS-RESET",
            "SELF-MMIO-NEEDS-RESET",
            "TABLE-OUTSIDE-NEEDS-RESET", "TABLE-OUTSIDE-QUEUE-ENABLED",
            "RNG-CHECK-OK", "RNG-WORKS",
            "DONE",
        ]
        #expect(Self.lines(outcome.serial) == expected, "\(outcome)")
    }

    @Test("A looping chain on virtio-blk sets DEVICE_NEEDS_RESET; virtio-rng keeps working and virtio-blk reads after a reset",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func virtioBlockAttack() throws {
        var image = [UInt8](repeating: 0, count: 1 << 20)
        image.replaceSubrange(0..<4, with: Array("HSTL".utf8))
        let disk = try BinaryTests.temporaryFile("hostile-disk.raw", image)
        defer { try? FileManager.default.removeItem(atPath: disk) }
        let firstDword = UInt32(littleEndian: image.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })
        let outcome = try Self.boot("block", code: HostileGuestPrograms.blockAttack(firstDword: firstDword),
                                    extra: ["--disk", "path=\(disk)"])
        #expect(outcome.cleanPowerOff, "\(outcome)")
        let expected = [
            "BLOCK", "RNG-FOUND", "BLK-FOUND",
            "BLK-LOOP-NEEDS-RESET",
            "RNG-CHECK-OK", "RNG-WORKS",
            "BLK-READ-OK", "BLK-WORKS",
            "DONE",
        ]
        #expect(Self.lines(outcome.serial) == expected, "\(outcome)")
    }

    @Test("A guest that triple-faults is reset and boots again; the log says where it faulted",
          .enabled(if: BinaryTests.kvmAvailable, "skipped: /dev/kvm is not usable here"))
    func tripleFaultResets() throws {
        var a = X86Assembler()
        a.mov(.esp, HostileGuestPrograms.stackTop)
        a.serialPrint("BOOT\n")
        a.emit([0x0F, 0x0B])                            // ud2 without an IDT: #UD, #GP, #DF, triple fault
        let outcome = try Self.boot("triple", code: try a.assemble(), timeout: 4)
        #expect(outcome.serial.hasPrefix("BOOT\n"), "\(outcome)")
        // The fault is logged with the instruction that caused it (ud2, the 26th byte of the
        // kernel at 0x100000); the VM is reset, boots and faults again.
        let faults = outcome.stderr.components(separatedBy: "vCPU 0: triple fault (rip 0x100019 ").count - 1
        #expect(faults >= 2, "\(outcome)")
        #expect(outcome.stderr.contains("idt 0x"), "\(outcome)")
        // The serial file goes on across the resets (each boot appends), as Cloud Hypervisor's.
        #expect(outcome.serial.components(separatedBy: "BOOT\n").count - 1 >= 2, "\(outcome)")
    }
}
