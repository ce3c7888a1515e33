import DeviceModel
import Foundation
import GuestMemory
import Testing
import VirtioDevices
import VirtioQueue

/// The virtio-iommu's saved state: its fields, its translation table and its request queue
/// survive a save and a restore into a fresh device; damaged tables are refused by name.
@Suite struct VirtioIommuStateTests {
    static let msi: ClosedRange<UInt64> = 0xfee0_0000...0xfeef_ffff
    static let features = VirtioFeature.version1 | VirtioIommu.mapUnmapFeature | VirtioIommu.probeFeature | VirtioIommu.bypassConfigFeature

    /// Sends one request on queue 0 with a 4-byte answer buffer; returns the status byte.
    func request(_ guest: StateDriver, _ bytes: [UInt8], notify: StateDriver? = nil) throws -> UInt8 {
        let answer = try guest.buffer([UInt8](repeating: 0xff, count: 4))
        try guest.post(0, [(try guest.buffer(bytes), bytes.count, false), (answer, 4, true)])
        (notify ?? guest).notify(0)
        return try guest.memory.readBytes(count: 1, at: GuestAddress(answer))[0]
    }

    @Test("domains, mappings, endpoints, bypass and the request queue's position come back in a fresh device")
    func roundTrip() throws {
        let iommu = VirtioIommu(msiRange: Self.msi)
        let guest = try StateDriver(device: iommu)
        guest.bringUp(features: Self.features, queues: [0, 1])
        #expect(try request(guest, IommuBytes.attach(domain: 3, endpoint: 0x18)) == 0)
        #expect(try request(guest, IommuBytes.map(domain: 3, first: 0x1_0000, last: 0x1_ffff, gpa: 0x8_0000)) == 0)
        #expect(try request(guest, IommuBytes.attach(domain: 4, endpoint: 0x20, flags: 1)) == 0)  // a bypass domain
        iommu.writeConfig(offset: VirtioIommu.bypassOffset, size: 1, value: 0)
        #expect(!iommu.mapping.snapshot.bypass)

        let saved = try throughJSON(guest.transport.saveState())
        let mapping = IommuMapping()
        let restored = try StateDriver(device: VirtioIommu(mapping: mapping, msiRange: Self.msi), memory: guest.memory)
        try restored.transport.restoreState(saved)
        #expect(mapping.snapshot == iommu.mapping.snapshot)
        #expect(restored.transport.saveState() == saved)
        #expect(mapping.endpoint(0x18).translate(0x1_0800, length: 16) == 0x8_0800)
        #expect(mapping.endpoint(0x20).translate(0x1234, length: 4) == 0x1234)
        #expect(mapping.endpoint(0x28).translate(0x1234, length: 4) == nil)  // bypass off: unattached endpoints blocked
        // The restored request queue goes on from where the first stopped.
        #expect(try request(guest, IommuBytes.unmap(domain: 3, first: 0x1_0000, last: 0x1_ffff), notify: restored) == 0)
        #expect(try guest.used(0).index == 4)
        #expect(mapping.endpoint(0x18).translate(0x1_0800, length: 16) == nil)
        #expect(iommu.mapping.endpoint(0x18).translate(0x1_0800, length: 16) == 0x8_0800)  // the first device's table is its own
    }

    /// A saved state whose table is `json` (IommuTable's Codable form).
    func state(_ saved: VirtioPCIDevice.State, table json: String) throws -> VirtioPCIDevice.State {
        var state = saved
        guard case let .iommu(fields, _) = saved.device else { throw DeviceStateError(device: "test", reason: "not an iommu state") }
        state.device = .iommu(fields, table: try JSONDecoder().decode(IommuTable.self, from: Data(json.utf8)))
        return state
    }

    @Test("overlapping, empty, wrapping or out-of-range mappings, an endpoint in a missing domain, a bypass byte of 2 and foreign features are refused by name, changing nothing")
    func damaged() throws {
        let iommu = VirtioIommu(msiRange: Self.msi, addressWidthBits: 48)
        let guest = try StateDriver(device: iommu)
        guest.bringUp(features: Self.features, queues: [0, 1])
        #expect(try request(guest, IommuBytes.attach(domain: 1, endpoint: 8)) == 0)
        let saved = guest.transport.saveState()
        let cases: [(String, String)] = [
            (#"{"endpoints":[8,1],"domains":[1,{"mappings":[{"iova":4096,"gpa":0,"size":8192},{"iova":8192,"gpa":0,"size":4096}],"bypass":false}],"bypass":true}"#,
             "domains[1].mappings[1].iova"),
            (#"{"endpoints":[8,1],"domains":[1,{"mappings":[{"iova":4096,"gpa":0,"size":0}],"bypass":false}],"bypass":true}"#,
             "domains[1].mappings[0].size: 0"),
            (#"{"endpoints":[8,1],"domains":[1,{"mappings":[{"iova":18446744073709547520,"gpa":0,"size":8192}],"bypass":false}],"bypass":true}"#,
             "wrap past 2^64"),
            (#"{"endpoints":[8,1],"domains":[1,{"mappings":[{"iova":281474976710656,"gpa":0,"size":4096}],"bypass":false}],"bypass":true}"#,
             "outside the input range"),
            (#"{"endpoints":[8,2],"domains":[1,{"mappings":[],"bypass":false}],"bypass":true}"#,
             "endpoints[8]: attached to domain 2"),
        ]
        let mapping = IommuMapping()
        let fresh = try StateDriver(device: VirtioIommu(mapping: mapping, msiRange: Self.msi, addressWidthBits: 48), memory: guest.memory)
        for (json, reason) in cases {
            let error = #expect(throws: DeviceStateError.self) { try fresh.transport.restoreState(try state(saved, table: json)) }
            #expect(error?.reason.contains(reason) == true, "\(error?.reason ?? "") for \(json)")
            #expect(mapping.snapshot == IommuTable())
        }
        guard case let .iommu(fields, table) = saved.device else { Issue.record("not an iommu state"); return }
        var badBypass = saved
        badBypass.device = .iommu(VirtioIommu.State(acknowledgedFeatures: fields.acknowledgedFeatures, bypass: 2), table: table)
        #expect(throws: DeviceStateError.self) { try fresh.transport.restoreState(badBypass) }
        var rng = saved
        rng.device = .rng
        #expect(throws: DeviceStateError.self) { try fresh.transport.restoreState(rng) }
        #expect(mapping.snapshot == IommuTable())
    }
}
