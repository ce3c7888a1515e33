import BlockStorage
import Foundation
import Qcow
import Testing

/// Reads into several buffers (as virtio-blk does with a guest's scatter list) must fill
/// exactly those buffers: nothing before, after or between them is touched.
@Suite("Qcow scatter reads")
struct ScatterReadTests {
    @Test("An overlay over a raw backing file fills scattered buffers exactly", arguments: [
        [512, 3584], [4096, 4096, 4096, 4096], [512], [1024, 512, 2560], [65536], [4096, 61440, 4096],
    ])
    func scatteredReads(lengths: [Int]) throws {
        let folder = NSTemporaryDirectory() + "qcow-scatter-\(getpid())-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let basePath = folder + "/base.raw"
        let base = (0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ ($0 >> 12)) }
        try Data(base).write(to: URL(fileURLWithPath: basePath))
        let overlay = folder + "/overlay.qcow2"
        try QcowImage.create(path: overlay, size: nil, backing: basePath, backingFormat: .raw)
        let image = try QcowImage(path: overlay, options: .init(backingFiles: true))
        // One allocated cluster in the overlay, so reads mix overlay and backing data.
        try image.write(bytes: [UInt8](repeating: 0xEE, count: 4096), at: 65536 + 8192)
        var expected = base
        for i in 0..<4096 { expected[65536 + 8192 + i] = 0xEE }

        let total = lengths.reduce(0, +)
        for offset in [0, 512, 65536, 65536 + 4096, 3 << 20] where offset + total <= base.count {
            // One arena with 64-byte guards around every buffer.
            let guardSize = 64
            let arenaSize = lengths.reduce(0) { $0 + $1 + guardSize } + guardSize
            let arena = UnsafeMutableRawBufferPointer.allocate(byteCount: arenaSize, alignment: 4096)
            defer { arena.deallocate() }
            arena.initializeMemory(as: UInt8.self, repeating: 0x5C)
            var buffers: [UnsafeMutableRawBufferPointer] = []
            var position = guardSize
            for length in lengths {
                buffers.append(UnsafeMutableRawBufferPointer(rebasing: arena[position..<(position + length)]))
                position += length + guardSize
            }
            try image.read(into: buffers, at: UInt64(offset))
            var cursor = offset
            position = 0
            for (index, length) in lengths.enumerated() {
                #expect(arena[position..<(position + guardSize)].allSatisfy { $0 == 0x5C }, "guard before buffer \(index) at offset \(offset)")
                position += guardSize
                #expect(Array(buffers[index]) == Array(expected[cursor..<(cursor + length)]), "buffer \(index) at offset \(offset)")
                cursor += length
                position += length
            }
            #expect(arena[position...].allSatisfy { $0 == 0x5C }, "guard after the last buffer at offset \(offset)")
        }
    }
}
