import Testing
import Hypervisor
@testable import Arch

/// A small KVM-style supported list (Intel vendor unless `amd`).
func supportedCPUID(amd: Bool = false) -> [CPUIDEntry] {
    let vendor: (UInt32, UInt32, UInt32) = amd ? (0x6874_7541, 0x444D_4163, 0x6974_6E65) : (0x756E_6547, 0x6C65_746E, 0x4965_6E69)
    return [
        CPUIDEntry(function: 0, eax: 0x1F, ebx: vendor.0, ecx: vendor.2, edx: vendor.1),
        CPUIDEntry(function: 1, eax: 0x806F8, ebx: 0x00FF_0800, ecx: 0x7EFA_3223, edx: 0x0F8B_FBFF),
        CPUIDEntry(function: 4, index: 0, flags: 1, eax: 0x0000_0121),  // L1 data
        CPUIDEntry(function: 4, index: 1, flags: 1, eax: 0x0000_0143),  // L2 unified
        CPUIDEntry(function: 4, index: 2, flags: 1, eax: 0x0000_0163),  // L3 unified
        CPUIDEntry(function: 4, index: 3, flags: 1, eax: 0),
        CPUIDEntry(function: 0xB, index: 0, flags: 1, eax: 1, ebx: 2, ecx: 0x100, edx: 7),
        CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0001, ebx: 0x4B4D_564B, ecx: 0x564B_4D56, edx: 0x4D),
        CPUIDEntry(function: 0x4000_0001, eax: 0x0100_7AFB),
        CPUIDEntry(function: 0x8000_0001, ecx: 0x1),
        CPUIDEntry(function: 0x8000_0002, eax: 0x6574_6E49),
        CPUIDEntry(function: 0x8000_0008, eax: 0x3030, ecx: 0x1_0007),
    ]
}

extension [CPUIDEntry] {
    func leaf(_ function: UInt32, _ index: UInt32 = 0) -> CPUIDEntry? {
        first { $0.function == function && $0.index == index }
    }
}

@Suite("CPUID")
struct CPUIDTests {
    let topology = CPUTopology(threadsPerCore: 2, coresPerDie: 2)

    @Test func apicIDsForTwoThreadsTimesTwoCores() throws {
        for vcpu: UInt32 in 0..<4 {
            let table = try CPUIDBuilder.build(supported: supportedCPUID(), vcpuID: vcpu, topology: topology, totalVCPUs: 4)
            let leaf1 = try #require(table.leaf(1))
            #expect(leaf1.ebx >> 24 == vcpu)
            #expect((leaf1.ebx >> 16) & 0xFF == 4)
            #expect(leaf1.ebx & 0xFFFF == 0x0800)  // CLFLUSH size kept
            #expect(leaf1.ecx & (1 << 31) != 0 && leaf1.ecx & (1 << 24) != 0)
            #expect(leaf1.edx & (1 << 28) != 0 && leaf1.edx & (1 << 12) != 0)
            #expect(table.filter { $0.function == 0xB }.allSatisfy { $0.edx == vcpu })
            #expect(table.filter { $0.function == 0x1F }.allSatisfy { $0.edx == vcpu })
        }
    }

    @Test func leafBAndOneFDescribeTheLevels() throws {
        let table = try CPUIDBuilder.build(supported: supportedCPUID(), vcpuID: 3, topology: topology, totalVCPUs: 4)
        let leafB = table.filter { $0.function == 0xB }
        #expect(leafB.count == 3)
        #expect(leafB[0] == CPUIDEntry(function: 0xB, index: 0, flags: 1, eax: 1, ebx: 2, ecx: 0x100, edx: 3))
        #expect(leafB[1] == CPUIDEntry(function: 0xB, index: 1, flags: 1, eax: 2, ebx: 4, ecx: 0x201, edx: 3))
        #expect(leafB[2] == CPUIDEntry(function: 0xB, index: 2, flags: 1, eax: 0, ebx: 0, ecx: 0x2, edx: 3))
        let leaf1F = table.filter { $0.function == 0x1F }
        #expect(leaf1F.map(\.eax) == [1, 2, 2, 0])
        #expect(leaf1F.map(\.ebx) == [2, 4, 4, 0])
        #expect(leaf1F.map { $0.ecx >> 8 } == [1, 2, 5, 0])
    }

    @Test func leafFourCoreAndSharingFields() throws {
        let table = try CPUIDBuilder.build(supported: supportedCPUID(), vcpuID: 0, topology: topology, totalVCPUs: 4)
        let l1 = try #require(table.leaf(4, 0))
        #expect(l1.eax >> 26 == 1)                // 2 cores per package
        #expect((l1.eax >> 14) & 0xFFF == 1)      // shared by the core's 2 threads
        #expect(l1.eax & 0x3FFF == 0x121)
        #expect((try #require(table.leaf(4, 2)).eax >> 14) & 0xFFF == 3)  // L3: whole package
        #expect(try #require(table.leaf(4, 3)).eax == 0)                  // the end marker stays
    }

    @Test func hypervisorLeaves() throws {
        let table = try CPUIDBuilder.build(supported: supportedCPUID(), vcpuID: 0, topology: topology, totalVCPUs: 4)
        let signature = try #require(table.leaf(0x4000_0000))
        var bytes: [UInt8] = []
        for register in [signature.ebx, signature.ecx, signature.edx] {
            bytes += (0..<4).map { UInt8(truncatingIfNeeded: register >> (8 * $0)) }
        }
        #expect(bytes == Array("KVMKVMKVM".utf8) + [0, 0, 0])
        #expect(signature.eax == 0x4000_0001)
        #expect(table.leaf(0x4000_0001)?.eax == 0x0100_7AFB)
        #expect(table.filter { $0.function == 0x4000_0000 }.count == 1)

        let withTSC = try CPUIDBuilder.build(supported: supportedCPUID(), vcpuID: 0, topology: topology, totalVCPUs: 4,
                                             options: CPUIDOptions(tscFrequencyKHz: 2_500_000))
        #expect(withTSC.leaf(0x4000_0000)?.eax == 0x4000_0010)
        #expect(withTSC.leaf(0x4000_0010)?.eax == 2_500_000 && withTSC.leaf(0x4000_0010)?.ebx == 1_000_000)
        let noKVM = try CPUIDBuilder.build(supported: supportedCPUID().filter { $0.function != 0x4000_0001 },
                                           vcpuID: 0, topology: topology, totalVCPUs: 4)
        #expect(noKVM.leaf(0x4000_0001) == CPUIDEntry(function: 0x4000_0001))
    }

    @Test func brandStringAndAddressWidthOptions() throws {
        let kept = try CPUIDBuilder.build(supported: supportedCPUID(), vcpuID: 0, topology: topology, totalVCPUs: 4)
        #expect(kept.leaf(0x8000_0002)?.eax == 0x6574_6E49)  // the host's brand stays
        let options = CPUIDOptions(tscDeadline: false, physicalAddressBits: 40, brandString: "Cloud Hypervisor in Swift")
        let table = try CPUIDBuilder.build(supported: supportedCPUID(), vcpuID: 0, topology: topology, totalVCPUs: 4,
                                           options: options)
        var brand: [UInt8] = []
        for function: UInt32 in 0x8000_0002...0x8000_0004 {
            let leaf = try #require(table.leaf(function))
            for register in [leaf.eax, leaf.ebx, leaf.ecx, leaf.edx] {
                brand += (0..<4).map { UInt8(truncatingIfNeeded: register >> (8 * $0)) }
            }
        }
        #expect(brand == Array("Cloud Hypervisor in Swift".utf8) + Array(repeating: 0, count: 23))
        #expect(table.leaf(0x8000_0008)?.eax == 0x3028)
        #expect(table.leaf(1)!.ecx & (1 << 24) == 0)
        #expect(throws: ArchError.invalidBrandString(String(repeating: "x", count: 48))) {
            _ = try CPUIDBuilder.build(supported: supportedCPUID(), vcpuID: 0, topology: topology, totalVCPUs: 4,
                                       options: CPUIDOptions(brandString: String(repeating: "x", count: 48)))
        }
    }

    @Test("nested=off hides VMX and SVM and the SVM feature leaf; nested=on (the default) keeps them")
    func nestedVirtualization() throws {
        var supported = supportedCPUID(amd: true)
        supported[1].ecx |= 1 << 5
        supported = supported.map { var e = $0; if e.function == 0x8000_0001 { e.ecx |= 1 << 2 }; return e }
        supported.append(CPUIDEntry(function: 0x8000_000A, eax: 1, ebx: 0x8000, edx: 0x1BF))
        let kept = try CPUIDBuilder.build(supported: supported, vcpuID: 0, topology: .flat(vcpus: 1), totalVCPUs: 1)
        #expect(kept.leaf(1)!.ecx & (1 << 5) != 0 && kept.leaf(0x8000_0001)!.ecx & (1 << 2) != 0 && kept.leaf(0x8000_000A) != nil)
        let hidden = try CPUIDBuilder.build(supported: supported, vcpuID: 0, topology: .flat(vcpus: 1), totalVCPUs: 1,
                                            options: CPUIDOptions(nestedVirtualization: false))
        #expect(hidden.leaf(1)!.ecx & (1 << 5) == 0 && hidden.leaf(0x8000_0001)!.ecx & (1 << 2) == 0 && hidden.leaf(0x8000_000A) == nil)
    }

    @Test func amdTopologyLeaves() throws {
        var supported = supportedCPUID(amd: true)
        supported.append(CPUIDEntry(function: 0x8000_001D, index: 0, flags: 1, eax: 0x121))
        let table = try CPUIDBuilder.build(supported: supported, vcpuID: 3, topology: topology, totalVCPUs: 4)
        let extended = try #require(table.leaf(0x8000_001E))
        #expect(extended.eax == 3)
        #expect(extended.ebx == (1 << 8) | 1)  // 2 threads per core, core 1
        #expect(extended.ecx == 0)             // one node, node 0
        #expect(table.leaf(0x8000_0001)!.ecx & ((1 << 1) | (1 << 22)) == (1 << 1) | (1 << 22))
        let sizes = try #require(table.leaf(0x8000_0008))
        #expect(sizes.ecx == 0x1_2003)          // PerfTscSize kept, ApicIdSize 2, NC 3
    }

    @Test func topologyValidationAndIDs() throws {
        #expect(throws: ArchError.self) {
            _ = try CPUIDBuilder.build(supported: [], vcpuID: 0, topology: topology, totalVCPUs: 3)
        }
        #expect(throws: ArchError.vcpuIDOutOfRange(id: 4, count: 4)) {
            _ = try CPUIDBuilder.build(supported: supportedCPUID(), vcpuID: 4, topology: topology, totalVCPUs: 4)
        }
        #expect(throws: ArchError.self) {
            try CPUTopology(threadsPerCore: 0, coresPerDie: 4).validate(totalVCPUs: 0)
        }
        // Three cores need two bits: vCPUs 6, 7, 8 of (2, 3, 1, 2) sit in package 1.
        let odd = CPUTopology(threadsPerCore: 2, coresPerDie: 3, diesPerPackage: 1, packages: 2)
        #expect([0, 1, 2, 6, 7, 8].map { odd.x2apicID(of: $0) } == [0, 1, 2, 8, 9, 10])
        #expect(CPUTopology(threadsPerCore: 1, coresPerDie: 256).maxX2APICID == 255)
        #expect(CPUTopology.flat(vcpus: 8).x2apicID(of: 5) == 5)
    }
}
