import BlockStorage
import GuestMemory
import Testing
@testable import VirtioDevices
import VirtioQueue

/// The allocation-free request path: its buffer walk must give exactly what the span-based
/// one gives, and a pass over several requests must keep each request's outcome its own.
@Suite struct BlockRequestPathTests {
    /// Buffers over two contiguous regions (0..<64 KiB, 64..<128 KiB), with empty ones between.
    static let descriptors: [Descriptor] = [
        Descriptor(address: GuestAddress(0x1000), length: 16, isWritable: false),
        Descriptor(address: GuestAddress(0x2000), length: 0, isWritable: false),
        Descriptor(address: GuestAddress(0xF800), length: 0x1000, isWritable: false),  // crosses into the second region
        Descriptor(address: GuestAddress(0x1_2000), length: 512, isWritable: false),
        Descriptor(address: GuestAddress(0x1_4000), length: 0, isWritable: false),
        Descriptor(address: GuestAddress(0x1_5000), length: 1, isWritable: false),
    ]

    @Test("the host buffers and the last byte match the span's pieces for every start and count")
    func helpersMatchTheSpan() throws {
        let memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: 0x1_0000), (start: GuestAddress(0x1_0000), size: 0x1_0000)])
        let total = Self.descriptors.reduce(0) { $0 + Int($1.length) }
        for first in 0...Self.descriptors.count {
            let slice = Self.descriptors[first...]
            let length = slice.reduce(0) { $0 + Int($1.length) }
            let expectedLast = length == 0 ? nil : ChainSpan(slice, start: length - 1, count: 1).pieces.first?.address
            #expect(ChainSpan.lastByte(of: slice) == expectedLast)
            for start in [0, 1, 15, 16, 17, 0x800, 0x1010, 0x100F, length - 1, length] where start >= 0 && start <= length {
                for count in [0, 1, 2, 0x7FF, 0x800, 0x801, length - start] where count >= 0 && start + count <= length {
                    let expected = try ChainSpan(slice, start: start, count: count).hostBuffers(in: memory)
                    var found: [UnsafeMutableRawBufferPointer] = []
                    try ChainSpan.forEachHostBuffer(slice, start: start, count: count, in: memory) { found.append($0) }
                    #expect(found.map(\.baseAddress) == expected.map(\.baseAddress), "start \(start) count \(count) from \(first)")
                    #expect(found.map(\.count) == expected.map(\.count), "start \(start) count \(count) from \(first)")
                }
            }
        }
        #expect(total == 0x1000 + 16 + 512 + 1)
        #expect(ChainSpan.lastByte(of: [Descriptor(address: GuestAddress(0x100), length: 0, isWritable: true)][...]) == nil)
    }

    @Test("a piece the guest memory does not back fails the walk")
    func unbackedPieceThrows() throws {
        let memory = try GuestMemory.anonymous([(start: GuestAddress(0), size: 0x1_0000)])
        let slice = [Descriptor(address: GuestAddress(0xFF00), length: 0x200, isWritable: true)][...]
        #expect(throws: GuestMemoryError.self) { try ChainSpan.forEachHostBuffer(slice, start: 0, count: 0x200, in: memory) { _ in } }
    }

    /// Writes a request header (type, sector) at `address`.
    func header(_ memory: GuestMemory, at address: UInt64, type: UInt32, sector: UInt64) throws {
        try memory.write(type, at: GuestAddress(address))
        try memory.write(UInt32(0), at: GuestAddress(address + 4))
        try memory.write(sector, at: GuestAddress(address + 8))
    }

    @Test("requests served in one pass each get their own status and used length; the counters add them up")
    func onePassManyRequests() throws {
        let disk = MemoryBlockBackend(size: 1 << 20)
        var blk = try BlockDriver(disk: disk)
        let memory = blk.driver.memory
        let pattern = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
        try memory.write(bytes: pattern, at: GuestAddress(0x4_0000))
        try memory.fill(0xEE, count: 3, at: GuestAddress(0x3_0000))
        // A: write 4 KiB at sector 0 (one data buffer).
        try header(memory, at: 0x2_0000, type: 1, sector: 0)
        try blk.driver.putDescriptor(0, address: 0x2_0000, length: 16, flags: 1, next: 1)
        try blk.driver.putDescriptor(1, address: 0x4_0000, length: 4096, flags: 1, next: 2)
        try blk.driver.putDescriptor(2, address: 0x3_0000, length: 1, flags: 2)
        // B: read past the end of the disk.
        try header(memory, at: 0x2_0010, type: 0, sector: 2048)
        try blk.driver.putDescriptor(3, address: 0x2_0010, length: 16, flags: 1, next: 4)
        try blk.driver.putDescriptor(4, address: 0x5_0000, length: 512, flags: 3, next: 5)
        try blk.driver.putDescriptor(5, address: 0x3_0001, length: 1, flags: 2)
        // C: read A's sectors back into two buffers.
        try header(memory, at: 0x2_0020, type: 0, sector: 0)
        try blk.driver.putDescriptor(6, address: 0x2_0020, length: 16, flags: 1, next: 7)
        try blk.driver.putDescriptor(7, address: 0x6_0000, length: 1000, flags: 3, next: 8)
        try blk.driver.putDescriptor(8, address: 0x6_1000, length: 3096, flags: 3, next: 9)
        try blk.driver.putDescriptor(9, address: 0x3_0002, length: 1, flags: 2)
        for head: UInt16 in [0, 3, 6] { try blk.driver.makeAvailable(head) }
        blk.driver.notify()

        #expect(try memory.readBytes(count: 3, at: GuestAddress(0x3_0000)) == [0, 1, 0])
        #expect(try (0..<3).map { try blk.driver.usedEntry($0).length } == [1, 1, 4097])
        #expect(try (0..<3).map { try blk.driver.usedEntry($0).id } == [0, 3, 6])
        #expect(Array(disk.contents[0..<4096]) == pattern)
        let readBack = try memory.readBytes(count: 1000, at: GuestAddress(0x6_0000)) + memory.readBytes(count: 3096, at: GuestAddress(0x6_1000))
        #expect(readBack == pattern)
        #expect(blk.device.counters == .init(readBytes: 4096, writeBytes: 4096, readOps: 1, writeOps: 1, errors: 1))

        // The next request's buffers are its own (nothing left over from the pass before).
        let result = try blk.submit(type: 1, sector: 16, dataLengths: [100, 412], payload: Array(pattern[0..<512]))
        #expect(result.status == 0)
        #expect(Array(disk.contents[8192..<(8192 + 512)]) == Array(pattern[0..<512]))
        #expect(blk.device.counters.writeOps == 2 && blk.device.counters.writeBytes == 4096 + 512)
    }
}
