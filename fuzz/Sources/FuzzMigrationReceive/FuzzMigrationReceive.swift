// fuzz-migration-receive: a hostile sender's bytes on a live migration's receiving side. The
// first byte picks the path: the protocol state machine (requests, versions, MemoryFd without
// descriptors, Config payloads), or a Memory request's body written into a 1 MiB guest memory.
// The receiver must refuse with a reason and never crash; an accepted Memory body must have
// landed exactly where its table said.
import FuzzSupport
import GuestMemory
import VMM

@main
enum MigrationReceiveFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        let path = input.integer(UInt8.self)
        if path & 1 == 0 {
            let reason = MigrationReceiveCheck.receive(input.rest())
            fuzzCheck(!reason.description.isEmpty, "the receiver stopped without a reason")
        } else {
            let tableLength = UInt64(input.integer(UInt16.self))
            let stream = input.rest()
            if case .success(let memory) = MigrationReceiveCheck.receiveMemory(tableLength: tableLength, stream: stream, size: 1 << 20) {
                // The table was whole and in range: each range holds the bytes that followed it.
                fuzzCheck(tableLength % 16 == 0 && Int(tableLength) <= stream.count, "a ragged or short table was accepted")
                var offset = Int(tableLength)
                for index in stride(from: 0, to: Int(tableLength), by: 16) {
                    var gpa: UInt64 = 0, length: UInt64 = 0
                    for byte in 0..<8 {
                        gpa |= UInt64(stream[index + byte]) << UInt64(8 * byte)
                        length |= UInt64(stream[index + 8 + byte]) << UInt64(8 * byte)
                    }
                    let expected = Array(stream[offset..<(offset + Int(length))])
                    offset += Int(length)
                    // A later range may overwrite an earlier one; check only the last writer's bytes.
                    if index + 16 == Int(tableLength) {
                        fuzzCheck((try? memory.readBytes(count: Int(length), at: GuestAddress(gpa))) == expected, "a range's bytes landed elsewhere")
                    }
                }
            }
        }
    }
}

/// A Start and a valid Config of a small VM (refused only because no machine is built), a
/// Memory request out of order, and a Memory body of two ranges.
private func seeds() -> [[UInt8]] {
    let config = Array(#"{"vm_config":{"cpus":{"boot_vcpus":1,"max_vcpus":1},"memory":{"size":16777216},"payload":{"kernel":"/k"}},"common_cpuid":[],"memory_manager_data":{"boot_ram":16777216,"current_ram":16777216,"guest_ram_mappings":[{"gpa":0,"size":16777216,"slot":0,"virtio_mem":false}],"hotplug_slots":[],"memory_ranges":{"data":[{"gpa":0,"length":16777216}]},"next_hotplug_slot":0,"selected_slot":0}}"#.utf8)
    let requests = [UInt8(0)] + MigrationReceiveCheck.streamStart(config: config)
    let outOfOrder: [UInt8] = [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0]
    let body = MigrationReceiveCheck.memoryBody([MemoryRange(gpa: 0x1000, length: 64), MemoryRange(gpa: 0xF_F000, length: 32)], fill: 0xA5)
    let memory = [UInt8(1), UInt8(body.tableLength & 0xFF), UInt8(body.tableLength >> 8)] + body.stream
    return [requests, outOfOrder, memory]
}
