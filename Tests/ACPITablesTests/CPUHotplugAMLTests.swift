import ACPITables
import Foundation
import Testing

/// The tables of a VM with CPU hotplug (boot 2, max 4): the MADT flags, the `\_SB_.PRES`
/// controller and the `\_SB_.CPUS` methods, disassembled by `iasl` and run by `acpiexec`.
@Suite("CPU hotplug AML")
struct CPUHotplugAMLTests {
    static let controllerAddress: UInt64 = 0xc000_1000

    static func configuration() -> ACPIConfiguration {
        var configuration = ACPIConfiguration(vcpuCount: 4)
        configuration.genericEventDevice = PlatformAML.GenericEventDevice(address: 0xc000_0000, irq: 5, events: [.cpuHotplug, .powerButton])
        configuration.cpuHotplug = (controllerAddress: controllerAddress, presentVCPUs: 2)
        return configuration
    }

    @Test func madtEnablesTheBootVCPUsAndMarksAllOnlineCapable() throws {
        let madt = try #require(try ACPITableSet.build(Self.configuration(), rsdpAddress: 0xa_0000).table("APIC")).bytes
        // Structures start at 44: 8-byte local APIC entries (type 0, length 8, UID, APIC ID, flags).
        var flags: [UInt32] = []
        for index in 0..<4 {
            let offset = 44 + index * 8
            #expect(madt[offset] == 0 && madt[offset + 1] == 8 && madt[offset + 2] == UInt8(index) && madt[offset + 3] == UInt8(index))
            flags.append(load(UInt32.self, madt, at: offset + 4))
        }
        #expect(flags == [0x3, 0x3, 0x2, 0x2])
        // Without hotplug the processors stay as before: enabled only.
        let fixed = try #require(try ACPITableSet.build(ACPIConfiguration(vcpuCount: 2), rsdpAddress: 0xa_0000).table("APIC")).bytes
        #expect(load(UInt32.self, fixed, at: 48) == 1 && load(UInt32.self, fixed, at: 56) == 1)
    }

    @Test func controllerFieldsBytes() {
        let bytes = PlatformAML.cpuHotplugController(address: Self.controllerAddress).amlBytes
        // Field (PRST, ByteAcc, NoLock, WriteAsZeros) { , 32, CPEN, 1, CINS, 1, CRMV, 1, CEJ0, 1, , 4, CCMD, 8 }
        let byteField: [UInt8] = [0x5b, 0x81, 0x23] + Array("PRST".utf8) + [0x41, 0x00, 0x20] + Array("CPEN".utf8) + [1]
            + Array("CINS".utf8) + [1] + Array("CRMV".utf8) + [1] + Array("CEJ0".utf8) + [1] + [0x00, 4] + Array("CCMD".utf8) + [8]
        #expect(bytes.firstRange(of: byteField) != nil)
        // Field (PRST, DWordAcc, NoLock, Preserve) { CSEL, 32, , 32, CDAT, 32 }
        let dwordField: [UInt8] = [0x5b, 0x81, 0x12] + Array("PRST".utf8) + [0x03] + Array("CSEL".utf8) + [0x20, 0x00, 0x20]
            + Array("CDAT".utf8) + [0x20]
        #expect(bytes.firstRange(of: dwordField) != nil)
        // OperationRegion (PRST, SystemMemory, 0xC0001000, 0x0C); Mutex (CPLK, 0)
        #expect(bytes.firstRange(of: [0x5b, 0x80] + Array("PRST".utf8) + [0x00, 0x0c, 0x00, 0x10, 0x00, 0xc0, 0x0a, 0x0c]) != nil)
        #expect(bytes.firstRange(of: [0x5b, 0x01] + Array("CPLK".utf8) + [0x00]) != nil)
    }

    @Test(.enabled(if: iaslPath != nil, "iasl is not installed (apt-get install acpica-tools)"))
    func disassemblyShowsCloudHypervisorsMethods() throws {
        let set = try ACPITableSet.build(Self.configuration(), rsdpAddress: 0xa_0000)
        let (result, asl) = try disassembledDSDT(set)
        #expect(result.status == 0, "\(result.output)")
        for fragment in [
            "Device (\\_SB.PRES)", "\"CPU Hotplug Controller\"", "Mutex (CPLK, 0x00)",
            "OperationRegion (PRST, SystemMemory, 0xC0001000, 0x0C)",
            "Method (CSTA, 1, Serialized)", "Acquire (\\_SB.PRES.CPLK, 0xFFFF)", "\\_SB.PRES.CSEL = Arg0",
            "If ((\\_SB.PRES.CPEN == One))", "Return (Local0)",
            "Method (CTFY, 2, Serialized)", "If ((Arg0 == 0x03))", "Notify (C003, Arg1)",
            "Method (CEJ0, 1, Serialized)", "\\_SB.PRES.CEJ0 = One",
            "Method (CSCN, 0, Serialized)", "While ((Local0 < 0x04))", "CTFY (Local0, One)", "CTFY (Local0, 0x03)",
            "\\_SB.PRES.CINS = One", "\\_SB.PRES.CRMV = One",
            "Return (CSTA (0x02))", "Method (_EJ0, 1, NotSerialized)", "CEJ0 (0x03)",
            "\\_SB.CPUS.CSCN ()",
        ] {
            #expect(asl.contains(fragment), "the disassembled DSDT lacks \(fragment)")
        }
    }

    /// Writes the DSDT, FADT and MADT for acpiexec.
    func writeTables() throws -> (URL, [String]) {
        try writeACPIExecTables(Self.configuration())
    }

    @Test(.enabled(if: acpiexecPath != nil, "acpiexec is not installed (apt-get install acpica-tools)"),
          arguments: [(UInt8(1), "000000000000000F"), (0, "0000000000000000")])
    func statusFollowsTheEnabledBit(fill: UInt8, expected: String) throws {
        let (directory, files) = try writeTables()
        defer { try? FileManager.default.removeItem(at: directory) }
        // acpiexec fills the simulated registers with `fill`: CPEN is its bit 0.
        let result = try runTool(acpiexecPath!, ["-fv", "\(fill)", "-b", "evaluate \\_SB.CPUS.C003._STA"] + files, in: directory)
        #expect(result.status == 0 && !result.output.contains("AE_"), "\(result.output)")
        #expect(result.output.contains("[Integer] = \(expected)"), "\(result.output)")
    }

    @Test(.enabled(if: acpiexecPath != nil, "acpiexec is not installed (apt-get install acpica-tools)"),
          arguments: [(UInt8(3), "Value 0x01 (Device Check)"), (5, "Value 0x03 (Eject Request)")])
    func gedEventNotifiesTheProcessors(fill: UInt8, value: String) throws {
        let (directory, files) = try writeTables()
        defer { try? FileManager.default.removeItem(at: directory) }
        // GDAT bit 0 (CPU hotplug) and CINS (bit 1, fill 3) or CRMV (bit 2, fill 5) in the status byte.
        let result = try runTool(acpiexecPath!, ["-fv", "\(fill)", "-b", "evaluate \\_SB.GED._EVT 0"] + files, in: directory)
        #expect(result.status == 0 && !result.output.contains("AE_"), "\(result.output)")
        for name in ["C000", "C003"] {
            #expect(result.output.contains("Notify on [\(name)]"), "\(result.output)")
        }
        #expect(result.output.contains(value), "\(result.output)")
    }

    @Test(.enabled(if: acpiexecPath != nil, "acpiexec is not installed (apt-get install acpica-tools)"))
    func ejectMethodRuns() throws {
        let (directory, files) = try writeTables()
        defer { try? FileManager.default.removeItem(at: directory) }
        // The simulated registers keep what the method wrote: the selection (3) and the eject bit.
        let commands = "evaluate \\_SB.CPUS.C003._EJ0 1; evaluate \\_SB.PRES.CSEL; evaluate \\_SB.PRES.CEJ0; evaluate \\_SB.PRES.CPEN"
        let result = try runTool(acpiexecPath!, ["-fv", "0", "-b", commands] + files, in: directory)
        #expect(result.status == 0 && !result.output.contains("AE_"), "\(result.output)")
        let values = result.output.split(separator: "\n").filter { $0.contains("[Integer] = ") }.map { $0.split(separator: " ").last.map(String.init) ?? "" }
        #expect(values.prefix(3) == ["0000000000000003", "0000000000000001", "0000000000000000"], "\(result.output)")
    }
}
