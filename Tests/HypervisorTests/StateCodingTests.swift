import Foundation
import Hypervisor
import Testing

/// The saved-state types as data, without /dev/kvm: JSON round trips, version checks, damage.
@Suite("vCPU and VM state coding")
struct StateCodingTests {
    static func sampleVCPU() -> VCPUState {
        var registers = StandardRegisters()
        registers.rax = 0x1234_5678_9ABC_DEF0
        registers.rip = 0x2005
        var special = SpecialRegisters()
        special.cr3 = 0x9000
        special.cs = SegmentRegister(base: 0, limit: 0xFFFF_FFFF, selector: 0x1B, type: 0xB, dpl: 3, l: true, g: true)
        var lapic = LAPICState()
        lapic.setRegister(at: LAPICState.spuriousVectorRegister, 0x1FF)
        var events = VCPUEvents()
        events.nmiMasked = true
        events.flags = 0xC
        return VCPUState(id: 2, cpuid: [CPUIDEntry(function: 0, eax: 0xD, ebx: 0x6874_7541)], registers: registers,
                         specialRegisters: special, fpu: FPUState(), xsave: Array(repeating: 0xA5, count: 4096),
                         xcrs: [ExtendedControlRegister(register: 0, value: 7)], msrs: [MSREntry(index: 0x10, data: 99)],
                         lapic: lapic, debugRegisters: DebugRegisters(), tscKHz: 2_000_000, events: events, mpState: .halted)
    }

    @Test("A vCPU state and a VM state decode to what was encoded, absent parts included")
    func roundTrip() throws {
        let state = Self.sampleVCPU()
        #expect(try JSONDecoder().decode(VCPUState.self, from: JSONEncoder().encode(state)) == state)
        var bare = state
        bare.xsave = nil; bare.xcrs = nil; bare.lapic = nil; bare.debugRegisters = nil; bare.tscKHz = nil
        #expect(try JSONDecoder().decode(VCPUState.self, from: JSONEncoder().encode(bare)) == bare)
        let vm = VMState(picMaster: [1, 2, 3], picSlave: nil, ioapic: [4], pit: PITState(channels: [5, 6], flags: 1),
                         clock: ClockState(clock: 123, flags: 4, realtime: 456))
        #expect(try JSONDecoder().decode(VMState.self, from: JSONEncoder().encode(vm)) == vm)
    }

    @Test("Another format version decodes but is refused, naming both versions")
    func versionRefused() throws {
        var state = Self.sampleVCPU()
        try state.checkVersion()
        state.version = VCPUState.currentVersion + 1
        let decoded = try JSONDecoder().decode(VCPUState.self, from: JSONEncoder().encode(state))
        let error = #expect(throws: HypervisorError.self) { try decoded.checkVersion() }
        #expect(error?.description == "vCPU 2 state has format version 2, but this VMM reads and writes version 1 only; restore it with the VMM that saved it")
        var vm = VMState(picMaster: nil, picSlave: nil, ioapic: nil, pit: nil, clock: nil)
        try vm.checkVersion()
        vm.version = 0
        #expect(throws: HypervisorError.self) { try vm.checkVersion() }
    }

    @Test("Damaged JSON is refused: a missing field, a LAPIC page of the wrong size")
    func damageRefused() throws {
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(Self.sampleVCPU())) as! [String: Any]
        var missing = json
        missing["registers"] = nil
        #expect(throws: DecodingError.self) {
            _ = try JSONDecoder().decode(VCPUState.self, from: JSONSerialization.data(withJSONObject: missing))
        }
        var missingOptional = json
        missingOptional["xsave"] = nil
        #expect(throws: DecodingError.self, "an absent part is written as null; a missing key is damage") {
            _ = try JSONDecoder().decode(VCPUState.self, from: JSONSerialization.data(withJSONObject: missingOptional))
        }
        var nullXSAVE = json
        nullXSAVE["xsave"] = NSNull()
        #expect(try JSONDecoder().decode(VCPUState.self, from: JSONSerialization.data(withJSONObject: nullXSAVE)).xsave == nil)
        let vm = try JSONSerialization.jsonObject(with: JSONEncoder().encode(VMState(picMaster: nil, picSlave: nil, ioapic: nil, pit: nil, clock: nil))) as! [String: Any]
        #expect(vm.keys.sorted() == ["clock", "ioapic", "picMaster", "picSlave", "pit", "version"], "absent devices are written as null")
        var shortPage = json
        shortPage["lapic"] = ["registers": Array(repeating: 0, count: 1000)]
        #expect(throws: DecodingError.self) {
            _ = try JSONDecoder().decode(VCPUState.self, from: JSONSerialization.data(withJSONObject: shortPage))
        }
    }

    @Test("Byte arrays are written as base64 text (RFC 4648's vectors) and read back")
    func bytesAsBase64() throws {
        let vm = VMState(picMaster: Array("f".utf8), picSlave: Array("fo".utf8), ioapic: Array("foo".utf8),
                         pit: PITState(channels: Array("foobar".utf8), flags: 0), clock: nil)
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(vm)) as! [String: Any]
        #expect(json["picMaster"] as? String == "Zg==")
        #expect(json["picSlave"] as? String == "Zm8=")
        #expect(json["ioapic"] as? String == "Zm9v")
        #expect((json["pit"] as? [String: Any])?["channels"] as? String == "Zm9vYmFy")
        let state = Self.sampleVCPU()
        let vcpu = try JSONSerialization.jsonObject(with: JSONEncoder().encode(state)) as! [String: Any]
        let xsaveText = vcpu["xsave"] as? String ?? ""
        #expect(xsaveText.count == 5464, "4096 bytes are 5464 characters of base64")
        let fpu = vcpu["fpu"] as? [String: Any] ?? [:]
        let xmm = fpu["xmm"] as? [String] ?? []
        #expect(xmm.count == 16)
        // Every length and byte value round-trips.
        for length in 0..<70 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 * 37 + length) }
            let pit = PITState(channels: bytes, flags: 3)
            #expect(try JSONDecoder().decode(PITState.self, from: JSONEncoder().encode(pit)) == pit)
        }
    }

    @Test("State written as arrays of numbers (earlier versions) still decodes; text that is not base64 is refused")
    func legacyAndDamagedBytes() throws {
        let state = Self.sampleVCPU()
        var json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(state)) as! [String: Any]
        json["xsave"] = state.xsave!.map(Int.init)
        json["lapic"] = ["registers": state.lapic!.registers.map(Int.init)]
        var fpu = json["fpu"] as! [String: Any]
        fpu["fpr"] = state.fpu.fpr.map { $0.map(Int.init) }
        fpu["xmm"] = state.fpu.xmm.map { $0.map(Int.init) }
        json["fpu"] = fpu
        #expect(try JSONDecoder().decode(VCPUState.self, from: JSONSerialization.data(withJSONObject: json)) == state)
        for bad in ["Zg=", "Z===", "Zh==", "Zm9v!A==", "@@@@"] {
            json["xsave"] = bad
            #expect(throws: DecodingError.self, "'\(bad)'") {
                _ = try JSONDecoder().decode(VCPUState.self, from: JSONSerialization.data(withJSONObject: json))
            }
        }
    }
}
