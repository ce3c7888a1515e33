import ACPITables
import Foundation
import Testing

@Suite struct VIOTTests {
    /// The table of a VM with the IOMMU at 0000:00:05.0 and two endpoints: 0000:00:02.0 and 0001:00:03.0.
    static let viot = VIOT(iommu: .init(segment: 0, bdf: 5 << 3), endpoints: [.init(segment: 0, bdf: 2 << 3), .init(segment: 1, bdf: 3 << 3)])

    func le(_ bytes: [UInt8], _ offset: Int, _ count: Int) -> UInt64 {
        (0..<count).reduce(UInt64(0)) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
    }

    @Test("header, node count and offset, the virtio-pci IOMMU node and one PCI range node per endpoint, as the ACPI 6.4 VIOT layout")
    func layout() {
        let bytes = Self.viot.bytes
        #expect(bytes.count == 36 + 12 + 16 + 2 * 24)
        #expect(Array(bytes[0..<4]) == Array("VIOT".utf8) && le(bytes, 4, 4) == UInt64(bytes.count))
        #expect(bytes[8] == 0 && bytes.reduce(UInt8(0), &+) == 0)
        #expect(Array(bytes[10..<16]) == Array("CLOUDH".utf8) && Array(bytes[16..<24]) == Array("CHVIOT  ".utf8))
        #expect(le(bytes, 24, 4) == 0)
        #expect(le(bytes, 36, 2) == 3 && le(bytes, 38, 2) == 48 && le(bytes, 40, 8) == 0)
        // The IOMMU: type 3 (virtio-pci), length 16, segment 0, BDF 0x28.
        #expect(bytes[48] == 3 && le(bytes, 50, 2) == 16 && le(bytes, 52, 2) == 0 && le(bytes, 54, 2) == 0x28 && le(bytes, 56, 8) == 0)
        // Each endpoint: type 1 (PCI range), length 24, endpoint id segment << 16 | BDF, segments and BDFs
        // from and to the one function, output node 48.
        for (index, (segment, bdf)) in [(UInt64(0), UInt64(0x10)), (1, 0x18)].enumerated() {
            let node = 64 + 24 * index
            #expect(bytes[node] == 1 && le(bytes, node + 2, 2) == 24)
            #expect(le(bytes, node + 4, 4) == segment << 16 | bdf)
            #expect(le(bytes, node + 8, 2) == segment && le(bytes, node + 10, 2) == segment)
            #expect(le(bytes, node + 12, 2) == bdf && le(bytes, node + 14, 2) == bdf)
            #expect(le(bytes, node + 16, 2) == 48 && le(bytes, node + 18, 6) == 0)
        }
    }

    @Test("the table set places the VIOT after the MCFG and lists it in the XSDT")
    func inTheSet() throws {
        var configuration = ACPIConfiguration(vcpuCount: 1)
        configuration.pciSegments = [MCFG.Allocation(baseAddress: MCFG.cloudHypervisorECAMBase)]
        configuration.viot = Self.viot
        let set = try ACPITableSet.build(configuration, rsdpAddress: 0xa_0000)
        #expect(set.tables.map(\.signature) == ["RSD PTR ", "DSDT", "FACP", "APIC", "MCFG", "VIOT", "XSDT"])
        let xsdt = try #require(set.table("XSDT"))
        let viot = try #require(set.table("VIOT"))
        #expect(le(xsdt.bytes, xsdt.bytes.count - 8, 8) == viot.address)
        #expect(viot.bytes == Self.viot.bytes)
        #expect(try ACPITableSet.build(ACPIConfiguration(vcpuCount: 1), rsdpAddress: 0xa_0000).table("VIOT") == nil)
    }

    /// iasl 20200925 (Debian 12's) predates VIOT: it checks the header and checksum and dumps the
    /// body raw, which must be the table's bytes; a newer iasl decodes the nodes too.
    @Test("iasl -d reads the header with a correct checksum", .enabled(if: iaslPath != nil, "iasl is not installed (apt-get install acpica-tools)"))
    func iasl() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try Data(Self.viot.bytes).write(to: directory.appendingPathComponent("viot.dat"))
        let result = try runIASL(["-d", "viot.dat"], in: directory)
        #expect(result.status == 0, "\(result.output)")
        let text = try String(contentsOf: directory.appendingPathComponent("viot.dsl"), encoding: .utf8)
        #expect(text.contains(#"Signature : "VIOT""#) && text.contains("Table Length : 00000070"))
        #expect(text.contains(#"Oem Table ID : "CHVIOT  ""#) && text.contains("Oem Revision : 00000000"))
        #expect(!text.lowercased().contains("incorrect checksum") && !result.output.contains("Error"))
        if text.contains("Unknown ACPI table signature") {
            #expect(text.contains("0030: 03 00 10 00 00 00 28 00 00 00 00 00 00 00 00 00"))
            #expect(text.contains("0040: 01 00 18 00 10 00 00 00 00 00 00 00 10 00 10 00"))
        } else {
            #expect(text.contains("Virtio-PCI") || text.contains("VIRTIO"), "\(text)")
        }
    }
}
