import Testing
import GuestMemory
@testable import VirtioQueue
import TestSupport


@Suite("Fuzzing")
struct FuzzTests {
    /// Random descriptor tables (sometimes pure noise, sometimes plausible), random
    /// indirect tables and random available rings: popping must never crash or hang, and
    /// every chain it returns must be in bounds and ordered.
    @Test func randomRingsNeverYieldInvalidChains() throws {
        var random = SplitMix64(seed: 0x5EED_CAFE)
        let driver = try Driver(size: 8)
        let indirectBase: UInt64 = 0x8000
        var popped = 0
        var refused = 0
        for _ in 0..<50_000 {
            let noise = Bool.random(using: &random)
            for index: UInt16 in 0..<8 {
                try writeRandomDescriptor(driver, index: index, table: Driver.table, noise: noise, random: &random)
                try writeRandomDescriptor(driver, index: index, table: indirectBase, noise: noise, random: &random)
            }
            for slot in 0..<UInt64(8) {
                let head = UInt16.random(in: 0...(noise ? 0xFFFF : 9), using: &random)
                try driver.memory.write(head, at: GuestAddress(Driver.avail + 4 + 2 * slot))
            }
            let ahead = noise ? UInt16.random(in: 0...0xFFFF, using: &random) : UInt16.random(in: 0...9, using: &random)
            try driver.setAvailIndex(driver.queue.nextAvailable &+ ahead)
            for _ in 0..<3 {
                do {
                    guard let chain = try driver.pop() else { break }
                    popped += 1
                    try check(chain, driver)
                } catch let error as QueueError {
                    refused += 1
                    _ = error.description
                    break
                }
            }
        }
        #expect(popped > 1000)
        #expect(refused > 1000)
    }

    func writeRandomDescriptor(_ driver: Driver, index: UInt16, table: UInt64, noise: Bool,
                               random: inout SplitMix64) throws {
        if noise {
            let bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &random) }
            try driver.memory.write(bytes: bytes, at: GuestAddress(table + UInt64(index) * 16))
            return
        }
        let indirect = UInt8.random(in: 0..<8, using: &random) == 0
        let address = indirect
            ? 0x8000 + UInt64.random(in: 0...1, using: &random) * 16
            : UInt64.random(in: 0...(Driver.memorySize + 0x100), using: &random)
        let length = indirect
            ? UInt32.random(in: 0...10, using: &random) * 16 + (Bool.random(using: &random) ? 0 : UInt32.random(in: 0...15, using: &random))
            : UInt32.random(in: 0...0x2000, using: &random)
        var flags = DescriptorFlags(rawValue: UInt16.random(in: 0...3, using: &random))
        if indirect { flags.insert(.indirect) }
        try driver.setDescriptor(index, address: address, length: length, flags: flags,
                                 next: UInt16.random(in: 0...9, using: &random), table: table)
    }

    func check(_ chain: DescriptorChain, _ driver: Driver) throws {
        #expect(chain.head < 8)
        #expect(chain.descriptors.count <= 16)
        var sawWritable = false
        for descriptor in chain.descriptors {
            #expect(driver.memory.isValidRange(descriptor.address, length: Int(descriptor.length)))
            if descriptor.isWritable { sawWritable = true } else { #expect(!sawWritable) }
        }
        #expect(chain.readableLength + chain.writableLength == chain.descriptors.reduce(0) { $0 + Int($1.length) })
        var writer = ChainWriter(chain, memory: driver.memory)
        try writer.write(bytes: [UInt8](repeating: 0, count: min(writer.remaining, 64)))
        var reader = ChainReader(chain, memory: driver.memory)
        _ = try reader.readBytes(count: min(reader.remaining, 64))
        try driver.queue.addUsed(head: chain.head, length: UInt32(writer.bytesWritten), in: driver.memory)
    }
}
