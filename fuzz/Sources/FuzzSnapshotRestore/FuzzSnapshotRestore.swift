// fuzz-snapshot-restore: the restore path's reading of a snapshot directory. The input is a
// config.json and a state.json (split at the first 0xff byte) and the size of memory-ranges;
// SnapshotCheck.check must accept them or refuse them with a SnapshotError, never crash.
// An accepted snapshot must really be consistent: its config.json validates (an edited
// config.json is accepted, as Cloud Hypervisor accepts it; the restore compares the machine).
#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import FuzzSupport
import Hypervisor
import VMM

@main
enum SnapshotRestoreFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

/// One directory reused by every run (files rewritten each time).
let directory: String = {
    let path = "/tmp/fuzz-snapshot-restore-\(getpid())"
    mkdir(path, 0o700)
    return path
}()

func write(_ name: String, _ bytes: [UInt8]) {
    let fd = open(directory + "/" + name, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    guard fd >= 0 else { fatalError("cannot write \(name) in \(directory)") }
    bytes.withUnsafeBytes { _ = Glibc.write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        let memorySize = Int(input.integer(UInt16.self)) * 4096
        let rest = input.rest()
        let split = rest.firstIndex(of: 0xff) ?? rest.endIndex
        let config = Array(rest[..<split]), state = split < rest.endIndex ? Array(rest[(split + 1)...]) : []
        write("config.json", config)
        write("state.json", state)
        let fd = open(directory + "/memory-ranges", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        _ = ftruncate(fd, off_t(memorySize))
        close(fd)
        guard let accepted = try? SnapshotCheck.check(url: "file://" + directory) else { return }
        fuzzCheck((try? accepted.validate()) != nil, "an accepted snapshot's configuration does not validate")
        fuzzCheck(accepted.cpus.bootVCPUs >= 1, "an accepted snapshot boots no vCPU")
    }
}

/// JSON text of `value`, as the VMM writes it.
private func json<T: Encodable>(_ value: T) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return String(decoding: (try? encoder.encode(value)) ?? Data(), as: UTF8.self)
}

/// A valid snapshot of a 1-vCPU, 16 MiB VM built from the real state types, and the same
/// with its state.json cut short.
private func seeds() -> [[UInt8]] {
    let config = Array(#"{"cpus":{"boot_vcpus":1,"max_vcpus":1},"memory":{"size":16777216},"payload":{"kernel":"/k"}}"#.utf8)
    let vcpu = VCPUState(id: 0, cpuid: [CPUIDEntry(function: 0)], registers: StandardRegisters(), specialRegisters: SpecialRegisters(),
                         fpu: FPUState(), xsave: nil, xcrs: nil, msrs: [MSREntry(index: 0x10, data: 1)], lapic: LAPICState(),
                         debugRegisters: nil, tscKHz: nil, events: VCPUEvents(), mpState: MPState(rawValue: 0))
    let vm = InKernelVMState(picMaster: nil, picSlave: nil, ioapic: nil, pit: nil, clock: nil)
    let header = "{\"config_digest\":\"\(SnapshotCheck.configDigest(config))\",\"memory_file_size\":16777216,\"vcpu_count\":1,"
        + "\"version\":1,\"vm\":\(json(vm)),\"vmm_version\":\"seed\"}"
    let tree = SnapshotNode(snapshots: [
        "cpu-manager": SnapshotNode(snapshots: ["0": SnapshotNode(state: json(vcpu))]),
        "memory-manager": SnapshotNode(state: #"{"data":[{"gpa":0,"length":16777216}]}"#),
        "device-manager": SnapshotNode(state: #"{"devices":[{"id":"serial","kind":"serial-16550"}]}"#),
    ], state: header)
    var seed: [UInt8] = [0x00, 0x10]   // 4096 pages: 16 MiB
    seed += config + [0xff] + Array(json(tree).utf8)
    return [seed, Array(seed.prefix(seed.count - 40))]
}
