import BlockStorage
import Foundation
import Qcow
import TestSupport
import Testing

extension Array where Element == UInt8 {
    func be64(_ offset: Int) -> UInt64 { self[offset..<(offset + 8)].reduce(0) { $0 << 8 | UInt64($1) } }
    mutating func put64(_ value: UInt64, _ offset: Int) {
        for index in 0..<8 { self[offset + index] = UInt8(truncatingIfNeeded: value >> (56 - 8 * index)) }
    }
    mutating func put32(_ value: UInt32, _ offset: Int) {
        for index in 0..<4 { self[offset + index] = UInt8(truncatingIfNeeded: value >> (24 - 8 * index)) }
    }
}

/// A small valid image with data, zero clusters and a hole, made by the module itself (so
/// these tests need no qemu-img): 1 MiB, 4 KiB clusters.
func makeSampleImage(in folder: ScratchFolder) throws -> [UInt8] {
    let path = folder.file("sample.qcow2")
    try QcowImage.create(path: path, size: 1 << 20, clusterSize: 4096)
    do {
        let image = try QcowImage(path: path)
        try image.write(bytes: diskPattern(count: 300_000, seed: 1), at: 0)
        try image.write(bytes: [UInt8](repeating: 0x77, count: 5000), at: 900_000)
        try image.writeZeroes(offset: 16384, length: 8192, unmap: false)
        try image.flush()
    }
    return try readFile(path)
}

/// Opens `bytes` as an image read-only and writable, reads it whole, writes a little; returns the first error.
func exerciseDamaged(_ bytes: [UInt8], at path: String, write: Bool = true, thorough: Bool = true) -> BlockError? {
    try? writeFile(path, bytes)
    var first: BlockError?
    do throws(BlockError) {
        let image = try QcowImage(path: path, options: .init(readOnly: true))
        if thorough {
            _ = try image.readBytes(count: Int(min(image.size, 1 << 20)), at: 0)
            _ = try image.info()
            _ = try image.check()
        } else {
            for offset: UInt64 in [0, 12288, 900_000] where offset + 8192 <= image.size {
                _ = try image.readBytes(count: 8192, at: offset)
            }
        }
    } catch { first = first ?? error }
    if write {
        do throws(BlockError) {
            let image = try QcowImage(path: path)
            try image.write(bytes: [UInt8](repeating: 0xAB, count: 6000), at: 2000)
            try image.discard(offset: 0, length: 8192)
            try image.flush()
            _ = try image.readBytes(count: Int(min(image.size, 1 << 20)), at: 0)
        } catch { first = first ?? error }
    }
    return first
}

@Suite("Malformed qcow2 images are refused, never crash")
struct MalformedImageTests {
    /// One hand-made damage and the error kind it must produce.
    struct Damage: CustomTestStringConvertible, Sendable {
        let name: String
        let expected: String  // "corrupt" or "unsupported"
        let apply: @Sendable (inout [UInt8]) -> Void
        var testDescription: String { name }
    }

    static let damages: [Damage] = [
        Damage(name: "bad magic", expected: "corrupt") { $0[3] = 0 },
        Damage(name: "version 4", expected: "unsupported") { $0.put32(4, 4) },
        Damage(name: "cluster_bits 8", expected: "corrupt") { $0.put32(8, 20) },
        Damage(name: "cluster_bits 22", expected: "corrupt") { $0.put32(22, 20) },
        Damage(name: "AES encryption", expected: "unsupported") { $0.put32(1, 32) },
        Damage(name: "LUKS encryption", expected: "unsupported") { $0.put32(2, 32) },
        Damage(name: "unknown incompatible bit 9", expected: "unsupported") { $0.put64(1 << 9, 72) },
        Damage(name: "external data file", expected: "unsupported") { $0.put64(1 << 2, 72) },
        Damage(name: "zstd compression", expected: "unsupported") { $0.put64(1 << 3, 72); $0[104] = 1 },
        Damage(name: "compression bit with deflate", expected: "corrupt") { $0.put64(1 << 3, 72) },
        Damage(name: "extended L2 entries", expected: "unsupported") { $0.put64(1 << 4, 72) },
        Damage(name: "header_length 100", expected: "corrupt") { $0.put32(100, 100) },
        Damage(name: "header_length past the cluster", expected: "corrupt") { $0.put32(8192, 100) },
        Damage(name: "L1 too small for the size", expected: "corrupt") { $0.put32(0, 36) },
        Damage(name: "virtual size 2^62", expected: "corrupt") { $0.put64(1 << 62, 24) },
        Damage(name: "virtual size 2^64-1", expected: "corrupt") { $0.put64(UInt64.max, 24) },
        Damage(name: "L1 offset misaligned", expected: "corrupt") { $0.put64($0.be64(40) + 8, 40) },
        Damage(name: "L1 offset past the end", expected: "corrupt") { $0.put64(1 << 40, 40) },
        Damage(name: "L1 offset 0 (the header)", expected: "corrupt") { $0.put64(0, 40) },
        Damage(name: "L1 size 2^32-1", expected: "corrupt") { $0.put32(UInt32.max, 36) },
        Damage(name: "refcount table past the end", expected: "corrupt") { $0.put64(1 << 50, 48) },
        Damage(name: "refcount table of 0 clusters", expected: "corrupt") { $0.put32(0, 56) },
        Damage(name: "refcount table of 2^31 clusters", expected: "corrupt") { $0.put32(1 << 31, 56) },
        Damage(name: "refcount_order 7", expected: "corrupt") { $0.put32(7, 96) },
        Damage(name: "backing name of 2000 bytes", expected: "corrupt") { $0.put64(200, 8); $0.put32(2000, 16) },
        Damage(name: "backing name past the cluster", expected: "corrupt") { $0.put64(4090, 8); $0.put32(100, 16) },
        Damage(name: "header extension overflowing", expected: "corrupt") { $0.put32(0x1234, 112); $0.put32(1 << 20, 116) },
        Damage(name: "70000 snapshots", expected: "corrupt") { $0.put32(70000, 60); $0.put64(4096, 64) },
        Damage(name: "L1 entry past the end of the file", expected: "corrupt") { bytes in
            bytes.put64(1 << 40 | 1 << 63, Int(bytes.be64(40)))
        },
        Damage(name: "L1 entry with reserved bits", expected: "corrupt") { bytes in
            let at = Int(bytes.be64(40))
            bytes.put64(bytes.be64(at) | 1 << 60, at)
        },
        Damage(name: "L1 entry misaligned", expected: "corrupt") { bytes in
            let at = Int(bytes.be64(40))
            bytes.put64(bytes.be64(at) + 512, at)
        },
        Damage(name: "L2 entry misaligned", expected: "corrupt") { bytes in
            let l2 = Int(bytes.be64(Int(bytes.be64(40))) & 0x00FF_FFFF_FFFF_FE00)
            bytes.put64(bytes.be64(l2) + 512, l2)
        },
        Damage(name: "L2 entry with reserved bits", expected: "corrupt") { bytes in
            let l2 = Int(bytes.be64(Int(bytes.be64(40))) & 0x00FF_FFFF_FFFF_FE00)
            bytes.put64(bytes.be64(l2) | 1 << 58, l2)
        },
        Damage(name: "compressed entry that does not inflate", expected: "corrupt") { bytes in
            let l2 = Int(bytes.be64(Int(bytes.be64(40))) & 0x00FF_FFFF_FFFF_FE00)
            bytes.put64(1 << 62 | 3 << 58 | 4096, l2)
        },
        Damage(name: "refcount table entry misaligned", expected: "corrupt") { bytes in
            let table = Int(bytes.be64(48))
            bytes.put64(bytes.be64(table) + 8, table)
        },
        Damage(name: "refcount block past the end", expected: "corrupt") { bytes in
            bytes.put64(1 << 45, Int(bytes.be64(48)))
        },
        Damage(name: "data cluster with refcount 0 (underflow on discard)", expected: "corrupt") { bytes in
            // Zero every refcount except the metadata's: freeing a data cluster underflows.
            let block = Int(bytes.be64(Int(bytes.be64(48))))
            for slot in 5..<2048 { bytes[block + slot * 2] = 0; bytes[block + slot * 2 + 1] = 0 }
        },
        Damage(name: "file cut inside the L2 tables", expected: "corrupt") { bytes in
            bytes.removeLast(bytes.count - 16384 - 100)
        },
    ]

    @Test("Hand-damaged headers and tables are refused with an error", arguments: damages)
    func damaged(_ damage: Damage) throws {
        let folder = try ScratchFolder()
        var bytes = try makeSampleImage(in: folder)
        damage.apply(&bytes)
        let error = exerciseDamaged(bytes, at: folder.file("damaged.qcow2"))
        switch (damage.expected, error) {
        case ("corrupt", .corrupt?), ("unsupported", .unsupported?):
            break
        default:
            Issue.record("\(damage.name): expected \(damage.expected), got \(error.map { "\($0)" } ?? "no error")")
        }
        #expect(error.map { "\($0)" }?.isEmpty == false)
    }

    @Test("The dirty and corrupt bits refuse writable opens but allow reading")
    func dirtyAndCorruptBits() throws {
        let folder = try ScratchFolder()
        let clean = try makeSampleImage(in: folder)
        for (bit, name) in [(UInt64(1), "dirty"), (2, "corrupt")] {
            var bytes = clean
            bytes.put64(bit, 72)
            let path = folder.file("\(name).qcow2")
            try writeFile(path, bytes)
            let error = #expect(throws: BlockError.self) { _ = try QcowImage(path: path) }
            #expect("\(error!)".contains("qemu-img check -r all"))
            let image = try QcowImage(path: path, options: .init(readOnly: true))
            #expect(try image.readBytes(count: 100, at: 0) == diskPattern(count: 100, seed: 1))
        }
    }

    @Test("Images with internal snapshots open read-only only")
    func snapshots() throws {
        let folder = try ScratchFolder()
        var bytes = try makeSampleImage(in: folder)
        bytes.put32(1, 60)
        bytes.put64(4096, 64)
        let path = folder.file("snap.qcow2")
        try writeFile(path, bytes)
        #expect(throws: BlockError.self) { _ = try QcowImage(path: path) }
        _ = try QcowImage(path: path, options: .init(readOnly: true)).readBytes(count: 10, at: 0)
    }

    @Test("Thousands of seeded random mutations of headers and tables never crash")
    func randomMutations() throws {
        let folder = try ScratchFolder()
        let clean = try makeSampleImage(in: folder)
        let path = folder.file("mutated.qcow2")
        var random = SplitMix64(seed: 0x51C0_77)
        var refused = 0
        let iterations = 3000
        for iteration in 0..<iterations {
            var bytes = clean
            let mutations = 1 + Int(random.next() % 4)
            for _ in 0..<mutations {
                // Mostly the header, sometimes the tables (refcount table, block, L1, L2s).
                let span = random.next() % 3 == 0 ? 128 : 7 * 4096
                let at = Int(random.next() % UInt64(span))
                switch random.next() % 4 {
                case 0: bytes[at] ^= UInt8(1 << (random.next() % 8))
                case 1: bytes[at] = UInt8(truncatingIfNeeded: random.next())
                case 2: bytes[at] = [0x00, 0xFF, 0x80, 0x7F][Int(random.next() % 4)]
                default:
                    let aligned = at & ~7
                    bytes.put64(random.next() >> (random.next() % 64), aligned)
                }
            }
            let error = exerciseDamaged(bytes, at: path, write: iteration % 3 == 0, thorough: iteration % 8 == 0)
            if error != nil { refused += 1 }
        }
        #expect(refused > iterations / 20, "most mutations should be noticed (\(refused) of \(iterations))")
    }
}
