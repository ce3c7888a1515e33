import Testing
import GuestMemory
@testable import Arch

@Suite("AArch64 memory layout")
struct AArch64LayoutTests {
    typealias L = AArch64Layout

    /// Every fixed region of the map, with its name.
    static func fixedRegions(vcpus: Int) throws -> [(String, UInt64, UInt64)] {
        let redist = try L.gicRedistributorRegion(vcpuCount: vcpus)
        let its = try L.gicITSRegion(vcpuCount: vcpus)
        return [
            ("UEFI", L.uefiStart.rawValue, L.uefiSize),
            ("ITS", its.start.rawValue, its.size),
            ("redistributors", redist.start.rawValue, redist.size),
            ("distributor", L.gicDistributorStart.rawValue, L.gicDistributorSize),
            ("PL011", L.pl011Start.rawValue, L.legacyDeviceSize),
            ("PL031", L.pl031Start.rawValue, L.legacyDeviceSize),
            ("PL061", L.pl061Start.rawValue, L.legacyDeviceSize),
            ("PCI I/O", L.pciIOStart.rawValue, L.pciIOSize),
            ("32-bit MMIO", L.mem32BitDevicesStart.rawValue, L.mem32BitDevicesSize),
            ("ECAM", L.pciMMConfigStart.rawValue, L.pciMMConfigSize),
            ("low RAM", L.ramStart.rawValue, L.mem32BitReservedStart.rawValue - L.ramStart.rawValue),
            ("reserved hole", L.mem32BitReservedStart.rawValue, L.mem32BitReservedSize),
        ]
    }

    @Test func valuesMatchCloudHypervisor() {
        #expect(L.gicDistributorStart.rawValue == 0x08FF_0000)
        #expect(L.pl011Start.rawValue == 0x0900_0000 && L.pl031Start.rawValue == 0x0901_0000)
        #expect(L.pl061Start.rawValue == 0x0902_0000 && L.pciIOStart.rawValue == 0x0905_0000)
        #expect(L.ramStart.rawValue == 1 << 30)
        #expect(L.acpiStart.rawValue == L.fdtStart.rawValue + L.fdtMaxSize)
        #expect(L.kernelStart.rawValue == L.acpiStart.rawValue + L.acpiMaxSize)
        #expect(L.mem32BitReservedStart.rawValue + L.mem32BitReservedSize == L.ram64BitStart.rawValue)
        #expect(L.tpmStart.rawValue >= L.mem32BitReservedStart.rawValue
                && L.tpmStart.rawValue + L.tpmSize <= L.ram64BitStart.rawValue)
        #expect(L.pciMMConfigSize / L.pciMMConfigSizePerSegment == 256)
    }

    @Test(arguments: [1, 2, 4, 64, 255])
    func regionsDoNotOverlapAndAreAligned(vcpus: Int) throws {
        let regions = try Self.fixedRegions(vcpus: vcpus).sorted { $0.1 < $1.1 }
        for (previous, next) in zip(regions, regions.dropFirst()) {
            #expect(previous.1 + previous.2 <= next.1, "\(previous.0) overlaps \(next.0) with \(vcpus) vCPUs")
        }
        for (name, start, size) in regions {
            #expect(start.isMultiple(of: 0x1_0000) && size.isMultiple(of: 0x1000), "\(name) misaligned")
        }
        #expect(L.kernelStart.rawValue.isMultiple(of: 2 << 20))
        #expect(L.pciMMConfigStart.rawValue + L.pciMMConfigSize <= L.ramStart.rawValue)
    }

    @Test func redistributorsGiveEachVCPUItsFrames() throws {
        let one = try L.gicRedistributorRegion(vcpuCount: 1)
        #expect(one.start.rawValue == 0x08FD_0000 && one.size == 0x2_0000)
        #expect(try L.gicITSRegion(vcpuCount: 1).start.rawValue == 0x08FB_0000)
        let most = try L.gicRedistributorRegion(vcpuCount: L.maxVCPUs)
        #expect(most.start.rawValue + most.size == L.gicDistributorStart.rawValue)
        #expect(most.size == UInt64(L.maxVCPUs) * L.gicRedistributorSizePerVCPU)
        #expect(try L.gicITSRegion(vcpuCount: L.maxVCPUs).start.rawValue >= L.uefiStart.rawValue + L.uefiSize)
        #expect(throws: AArch64Error.invalidVCPUCount(count: 256, max: 255)) { try L.gicRedistributorRegion(vcpuCount: 256) }
        #expect(throws: AArch64Error.invalidVCPUCount(count: 0, max: 255)) { try L.gicITSRegion(vcpuCount: 0) }
    }

    @Test func ramSplitsAroundTheReservedHole() throws {
        let small = try L.ramRegions(size: 512 << 20)
        #expect(small.count == 1 && small[0].start == L.ramStart && small[0].size == 512 << 20)
        let low = L.mem32BitReservedStart.rawValue - L.ramStart.rawValue
        let exact = try L.ramRegions(size: low)
        #expect(exact.count == 1)
        let big = try L.ramRegions(size: 8 << 30)
        #expect(big.count == 2 && big[0].size == low && big[1].start == L.ram64BitStart && big[1].size == (8 << 30) - low)
        #expect(throws: AArch64Error.invalidRAMSize(0)) { try L.ramRegions(size: 0) }
        #expect(throws: AArch64Error.invalidRAMSize(4097)) { try L.ramRegions(size: 4097) }
        #expect(throws: AArch64Error.invalidRAMSize(UInt64.max - 4095)) { try L.ramRegions(size: UInt64.max - 4095) }
    }

    @Test func initramfsGoesToTheTopOfRAM() throws {
        let end = GuestAddress(L.ramStart.rawValue + (256 << 20))
        let address = try L.initramfsAddress(size: 5000, ramEnd: end, lowest: L.kernelStart)
        #expect(address.rawValue == end.rawValue - 8192)
        #expect(throws: AArch64Error.initramfsDoesNotFit(size: 256 << 20, ramEnd: end.rawValue, lowest: L.kernelStart.rawValue)) {
            try L.initramfsAddress(size: 256 << 20, ramEnd: end, lowest: L.kernelStart)
        }
        let error = AArch64Error.initramfsDoesNotFit(size: 1, ramEnd: 0x5000_0000, lowest: 0x4040_0000)
        #expect(error.description.contains("0x50000000") && error.description.contains("0x40400000"))
    }
}
