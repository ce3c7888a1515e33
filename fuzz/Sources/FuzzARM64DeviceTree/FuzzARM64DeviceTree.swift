// fuzz-arm64-fdt: a fuzzed arm64 device-tree configuration (vCPUs and MPIDRs, RAM, command
// line, initramfs, PMU, legacy devices and their interrupts, PCI segments, NUMA nodes) goes to
// ARM64DeviceTree.build. It must refuse bad configurations with an AArch64Error; a blob it
// returns must be a well-formed FDT (header, balanced structure block, property names inside
// the strings block) with one `cpu@` node per vCPU, no larger than the layout allows.
import Arch
import FuzzSupport
import GuestMemory

@main
enum ARM64DeviceTreeFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        guard let config = decode(&input) else { return }
        guard let blob = try? ARM64DeviceTree.build(config) else { return }
        fuzzCheck(UInt64(blob.count) <= AArch64Layout.fdtMaxSize, "a \(blob.count)-byte tree passed the limit")
        checkWellFormed(blob, vcpus: config.mpidrs.count)
    }
}

func decode(_ input: inout FuzzInput) -> ARM64DeviceTree.Configuration? {
    let vcpus = input.int(in: 0...300)
    let defaultMPIDRs = input.bool()
    let mpidrs = (0..<vcpus).map { defaultMPIDRs ? ARM64DeviceTree.defaultMPIDR($0) : input.integer(UInt64.self) }
    let pages = UInt64(input.integer(UInt32.self))
    guard let memory = try? AArch64Layout.ramRegions(size: pages * 4096) else { return nil }
    let commandLine = String(decoding: input.run(maxCount: 2100), as: UTF8.self)
    var config = ARM64DeviceTree.Configuration(memory: memory, mpidrs: mpidrs, commandLine: commandLine)
    if input.bool() { config.initramfs = (GuestAddress(input.integer(UInt64.self)), input.integer(UInt64.self)) }
    config.pmu = input.bool()
    func device(_ address: GuestAddress) -> ARM64DeviceTree.PlatformDevice? {
        input.bool() ? ARM64DeviceTree.PlatformDevice(address: address, irq: UInt32(input.int(in: 0...300))) : nil
    }
    config.serial = device(AArch64Layout.pl011Start)
    config.rtc = device(AArch64Layout.pl031Start)
    config.gpio = device(AArch64Layout.pl061Start)
    config.pciSegments = (0..<input.int(in: 0...3)).map { _ in
        ARM64DeviceTree.PCISegment(id: UInt16(input.byte() % 4), ecamAddress: GuestAddress(input.integer(UInt64.self)),
                                   mmio64Start: GuestAddress(input.integer(UInt64.self)), mmio64Size: input.integer(UInt64.self))
    }
    config.numaNodes = (0..<input.int(in: 0...3)).map { _ in
        let id = UInt32(input.byte() % 4)
        let cpus = (0..<input.int(in: 0...4)).map { _ in input.int(in: 0...300) }
        let ranges = (0..<input.int(in: 0...2)).map { _ in (start: GuestAddress(input.integer(UInt64.self)), size: input.integer(UInt64.self)) }
        var distances: [UInt32: UInt8] = [:]
        for _ in 0..<input.int(in: 0...2) { distances[UInt32(input.byte() % 4)] = input.byte() }
        return ARM64DeviceTree.NUMANode(id: id, vcpus: cpus, memory: ranges, distances: distances)
    }
    return config
}

/// Walks the blob as a kernel's FDT parser would and checks what it finds.
func checkWellFormed(_ blob: [UInt8], vcpus: Int) {
    func u32(_ offset: Int) -> UInt32? {
        guard offset >= 0, offset + 4 <= blob.count else { return nil }
        return blob[offset..<(offset + 4)].reduce(0) { $0 << 8 | UInt32($1) }
    }
    guard let magic = u32(0), let total = u32(4), let structOffset = u32(8), let stringsOffset = u32(12),
          let version = u32(20), let stringsSize = u32(32), let structSize = u32(36) else {
        fuzzCheck(false, "the header is cut short")
        return
    }
    fuzzCheck(magic == 0xD00D_FEED && Int(total) == blob.count && version == 17, "bad header")
    let structEnd = Int(structOffset) + Int(structSize)
    fuzzCheck(structEnd <= Int(stringsOffset) && Int(stringsOffset) + Int(stringsSize) <= blob.count, "blocks overlap or overrun")
    var position = Int(structOffset), depth = 0, cpuNodes = 0, ended = false
    while position < structEnd, !ended {
        guard let token = u32(position) else { fuzzCheck(false, "token past the end"); return }
        position += 4
        switch token {
        case 1:
            guard let nul = blob[position..<structEnd].firstIndex(of: 0) else { fuzzCheck(false, "unterminated node name"); return }
            if blob[position..<nul].starts(with: Array("cpu@".utf8)) { cpuNodes += 1 }
            position = (nul + 4) & ~3
            depth += 1
        case 2:
            depth -= 1
            fuzzCheck(depth >= 0, "END_NODE without a node")
        case 3:
            guard let length = u32(position), let nameOffset = u32(position + 4) else { fuzzCheck(false, "property cut short"); return }
            fuzzCheck(nameOffset < stringsSize, "a property name outside the strings block")
            position += 8 + ((Int(length) + 3) & ~3)
        case 9:
            ended = true
        default:
            fuzzCheck(false, "unknown token \(token) at \(position - 4)")
            return
        }
    }
    fuzzCheck(ended && depth == 0 && position == structEnd, "the structure block is not closed where it says")
    fuzzCheck(cpuNodes == vcpus, "\(cpuNodes) cpu nodes for \(vcpus) vCPUs")
}

/// Valid configurations: 1 vCPU with 256 MiB; 4 vCPUs, 2 GiB, initramfs, PCI, PMU and two NUMA nodes.
private func seeds() -> [[UInt8]] {
    var small = FuzzInputBuilder()
    small.integer(UInt16(1)); small.byte(1); small.integer(UInt32(65536))
    small.run(Array("console=ttyAMA0".utf8), maxCount: 2100)
    small.byte(0); small.byte(0)
    for irq in [33, 34, 35] { small.byte(1); small.integer(UInt16(irq)) }
    small.byte(0); small.byte(0)

    var numa = FuzzInputBuilder()
    numa.integer(UInt16(4)); numa.byte(1); numa.integer(UInt32((2 << 30) >> 12))
    numa.run(Array("console=ttyAMA0 root=/dev/vda1".utf8), maxCount: 2100)
    numa.byte(1); numa.integer(UInt64(0xBF00_0000)); numa.integer(UInt64(1 << 20))
    numa.byte(1)
    for irq in [33, 34, 35] { numa.byte(1); numa.integer(UInt16(irq)) }
    numa.byte(1); numa.byte(0); numa.integer(UInt64(0x3000_0000)); numa.integer(UInt64(0x1_0000_0000)); numa.integer(UInt64(64 << 30))
    numa.byte(2)
    for node in 0..<2 {
        numa.byte(UInt8(node)); numa.byte(2); numa.integer(UInt16(2 * node)); numa.integer(UInt16(2 * node + 1))
        numa.byte(1); numa.integer(UInt64(0x4000_0000 + UInt64(node) << 30)); numa.integer(UInt64(1 << 30))
        numa.byte(1); numa.byte(UInt8(1 - node)); numa.byte(20)
    }
    return [small.bytes, numa.bytes]
}
