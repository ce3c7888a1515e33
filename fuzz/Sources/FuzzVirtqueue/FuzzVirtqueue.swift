// fuzz-virtqueue: SplitQueue over fuzzed guest memory. The driver side writes chains, raw
// descriptors, indirect tables and ring fields; the device side pops chains, reads and
// writes them with ChainReader/ChainWriter, returns them and checks notification state.
// Any QueueError is fine; a trap, or a popped chain that breaks the promises below, is not.
import FuzzSupport
import GuestMemory
import VirtioQueue

@main
enum VirtqueueFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        FuzzGuest.clear()
        var maxSize = UInt16(1) << (input.byte() % 16)
        var driver = GuestQueue(&input, index: 0, maxSize: maxSize)
        var queue = driver.queue
        let memory = FuzzGuest.memory
        while !input.isExhausted {
            switch input.byte() % 10 {
            case 0, 1, 2, 3:
                driver.act(&input)
            case 4, 5:
                guard let chain = try? queue.popDescriptorChain(in: memory) else { continue }
                check(chain, queue: queue)
                let written = consume(chain, &input)
                if input.bool() { try? queue.addUsed(head: chain.head, length: UInt32(written), in: memory) }
            case 6:
                try? queue.addUsed(head: input.integer(UInt16.self), length: input.integer(UInt32.self), in: memory)
            case 7:
                switch input.byte() % 3 {
                case 0: _ = try? queue.needsNotification(in: memory)
                case 1: _ = try? queue.enableNotification(in: memory)
                default: try? queue.disableNotification(in: memory)
                }
            case 8:
                if let pending = try? queue.pendingCount(in: memory) {
                    fuzzCheck((0...Int(queue.size)).contains(pending), "\(pending) chains pending on a queue of \(queue.size)")
                }
            default:
                maxSize = UInt16(1) << (input.byte() % 16)
                driver = GuestQueue(&input, index: 0, maxSize: maxSize)
                queue = driver.queue
            }
        }
    }
}

/// What a popped chain promises: buffers inside guest memory, readable ones first, no
/// more buffers than the queue (or its indirect table) allows.
private func check(_ chain: DescriptorChain, queue: SplitQueue) {
    fuzzCheck(!chain.descriptors.isEmpty, "empty chain at head \(chain.head)")
    fuzzCheck(chain.head < queue.size, "head \(chain.head) outside a queue of \(queue.size)")
    fuzzCheck(chain.descriptors.count <= Int(queue.size), "\(chain.descriptors.count) buffers on a queue of \(queue.size)")
    for (position, descriptor) in chain.descriptors.enumerated() {
        fuzzCheck(FuzzGuest.memory.isValidRange(descriptor.address, length: Int(descriptor.length)),
                  "buffer \(descriptor.address)+\(descriptor.length) outside guest memory")
        fuzzCheck(descriptor.isWritable == (position >= chain.firstWritable), "readable buffer after a writable one")
    }
}

/// Reads and writes the chain in fuzzed steps; returns the bytes written.
private func consume(_ chain: DescriptorChain, _ input: inout FuzzInput) -> Int {
    let memory = FuzzGuest.memory
    var reader = ChainReader(chain, memory: memory)
    var writer = ChainWriter(chain, memory: memory)
    for _ in 0..<Int(input.byte() % 8) {
        do {
            switch input.byte() % 6 {
            case 0: _ = try reader.read(UInt8.self)
            case 1: _ = try reader.read(UInt32.self)
            case 2: _ = try reader.read(UInt64.self)
            case 3: _ = try reader.readBytes(count: min(Int(input.integer(UInt16.self)), reader.remaining + 1))
            case 4: try reader.skip(Int(input.integer(UInt16.self)))
            default: break
            }
            switch input.byte() % 4 {
            case 0: try writer.write(input.integer(UInt16.self))
            case 1: try writer.write(input.integer(UInt64.self))
            case 2: try writer.write(bytes: input.run(maxCount: 300))
            default: try writer.write(bytes: [UInt8](repeating: 0xa5, count: min(writer.remaining, Int(input.integer(UInt16.self)))))
            }
        } catch {
            // Overruns are the caller's mistake and must be refused, which they were.
        }
        fuzzCheck(reader.bytesRead + reader.remaining == chain.readableLength, "reader lost track of the readable length")
        fuzzCheck(writer.bytesWritten + writer.remaining == chain.writableLength, "writer lost track of the writable length")
    }
    return writer.bytesWritten
}

/// A queue of 16 with a header-plus-status chain, a three-buffer chain, and an indirect one.
private func seeds() -> [[UInt8]] {
    typealias Buffer = FuzzInputBuilder.SeedBuffer
    var simple = FuzzInputBuilder()
    simple.byte(4)
    simple.queueSetup(sizeLog2: 4)
    simple.byte(0)
    simple.chain(head: 0, [Buffer(offset: 0, length: 16, writable: false, payload: Array(0..<16)),
                           Buffer(offset: 0x100, length: 1, writable: true)])
    simple.append([4, 4, 1, 0, 1, 0, 1, 0, 1])  // pop, consume a few steps, return it
    var split = FuzzInputBuilder()
    split.byte(8)
    split.queueSetup(sizeLog2: 8, eventIndex: true)
    split.byte(0)
    split.chain(head: 3, [Buffer(offset: 0x7ff0, length: 32, writable: false, payload: Array(repeating: 7, count: 32)),
                          Buffer(offset: 0x2000, length: 4096, writable: true),
                          Buffer(offset: 0x4000, length: 512, writable: true)])
    split.append([5, 3, 3, 0x10, 0, 2, 0, 0, 3, 0, 0x10, 1, 7, 0])
    var indirect = FuzzInputBuilder()
    indirect.byte(4)
    indirect.queueSetup(sizeLog2: 4)
    indirect.append([0, 4, 0])  // an indirect table at the data area start
    indirect.integer(UInt32(0))
    indirect.byte(1)
    for entry in 0..<2 {
        indirect.byte(0)
        indirect.integer(UInt32(0x200 + 0x100 * entry))
        indirect.append([0, 64, entry == 0 ? 1 : 2, UInt8(entry + 1)])
    }
    indirect.append([2, 1, 1])
    indirect.append([4, 2, 0, 0, 1])
    return [simple.bytes, split.bytes, indirect.bytes]
}
