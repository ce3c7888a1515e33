// fuzz-option-parser: the command-line option parsers (--cpus, --memory, --serial/--console,
// --rng, --disk, --net with their rate limits) on fuzzed text, and VMConfig decoded from fuzzed JSON. Whatever parses
// is validated, and must survive a JSON round trip unchanged (the CLI and the REST API
// share these types, so a value the one accepts must mean the same through the other).
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import FuzzSupport
import VMM

@main
enum OptionParserFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

/// Encodes `value` to JSON and back; the copy must equal the original.
private func roundTrip<T: Codable & Equatable>(_ value: T) {
    do {
        let copy = try JSONDecoder().decode(T.self, from: try JSONEncoder().encode(value))
        fuzzCheck(copy == value, "\(T.self) changed through JSON: \(value) became \(copy)")
    } catch {
        fuzzCheck(false, "\(T.self) \(value) does not survive JSON: \(error)")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        let which = input.byte() % 7
        let bytes = input.rest()
        let text = String(decoding: bytes, as: UTF8.self)
        switch which {
        case 0:
            guard let cpus = try? CpusConfig.parse(text) else { return }
            try? cpus.validate()
            roundTrip(cpus)
        case 1:
            guard let memory = try? MemoryConfig.parse(text) else { return }
            try? memory.validate()
            roundTrip(memory)
        case 2:
            guard let console = try? ConsoleConfig.parse(text, option: "--console") else { return }
            try? console.validate(option: "--console")
            roundTrip(console)
        case 3:
            guard let rng = try? RngConfig.parse(text) else { return }
            roundTrip(rng)
        case 4:
            guard let disk = try? DiskConfig.parse(text) else { return }
            try? disk.validate()
            roundTrip(disk)
        case 6:
            guard let net = try? NetConfig.parse(text) else { return }
            try? net.validate()
            _ = net.rateLimiterConfig.map { $0.makeLimiter().consume(bytes: 4096) }
            // Descriptors are never written out (Cloud Hypervisor's NetConfig serialiser drops them).
            var echoed = net
            echoed.fds = nil
            roundTrip(echoed)
        default:
            guard let config = try? JSONDecoder().decode(VMConfig.self, from: Data(bytes)) else { return }
            try? config.validate()
            _ = config.diskIDs
            _ = config.absentFeatures
            var echoed = config
            echoed.net = echoed.net?.map { var net = $0; net.fds = nil; return net }
            echoed.devices = echoed.devices?.map { var device = $0; device.fd = nil; return device }
            roundTrip(echoed)
        }
    }
}

/// Cloud Hypervisor's documented option examples, and a full VM configuration as JSON.
private func seeds() -> [[UInt8]] {
    let options: [(UInt8, String)] = [
        (0, "boot=2,max=2,topology=1:2:1:1,kvm_hyperv=off,max_phys_bits=46"),
        (1, "size=1G,mergeable=off,shared=on,hugepages=on,hugepage_size=2M,prefault=off,thp=on"),
        (2, "file=/tmp/console.log,iommu=off"),
        (2, "tty"),
        (3, "src=/dev/urandom,iommu=off"),
        (4, "path=/var/lib/disk.raw,readonly=on,direct=off,num_queues=2,queue_size=256,id=disk0,serial=\"SN,42\",image_type=raw"),
        (4, "path=/d.raw,bw_size=1048576,bw_one_time_burst=4096,bw_refill_time=100,ops_size=100,ops_refill_time=1000"),
        (6, "tap=tap0,mac=52:54:00:12:34:56,ip=192.168.249.1,mask=255.255.255.0,num_queues=4,queue_size=256,bw_size=262144,bw_refill_time=1000"),
        (6, "fd=[3,4],ops_size=10,ops_one_time_burst=5,ops_refill_time=10"),
    ]
    var config = VMConfig()
    config.payload = PayloadConfig(kernel: "/boot/vmlinux", cmdline: "console=ttyS0 root=/dev/vda", initramfs: "/boot/initrd")
    config.cpus.bootVCPUs = 2
    config.cpus.maxVCPUs = 2
    config.memory.size = 1 << 30
    var disk = DiskConfig(path: "/images/root.qcow2")
    disk.imageType = .qcow2
    disk.id = "root"
    config.disks = [disk]
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let json = (try? encoder.encode(config)).map { Array($0) } ?? []
    return options.map { [$0.0] + Array($0.1.utf8) } + [[5] + json, [5] + Array(#"{"payload":{"kernel":"/k"}}"#.utf8)]
}
