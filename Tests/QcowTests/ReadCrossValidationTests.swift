import BlockStorage
import Foundation
import Qcow
import Testing

/// Images written by qemu-img and qemu-io read back byte-identical through the Qcow module.
@Suite("qcow2 reads agree with qemu-img", .enabled(if: Qemu.available, Qemu.reason))
struct ReadCrossValidationTests {
    /// Reads the whole disk in odd-sized pieces (so requests straddle clusters and L2 tables).
    static func readAll(_ disk: any BlockBackend, piece: Int = 300_001) throws -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(Int(disk.size))
        var offset: UInt64 = 0
        while offset < disk.size {
            let count = Int(min(UInt64(piece), disk.size - offset))
            bytes += try disk.readBytes(count: count, at: offset)
            offset += UInt64(count)
        }
        return bytes
    }

    @Test("Converted images (v2 and v3, 512 B to 2 MiB clusters) read back identical",
          arguments: [("0.10", 512), ("1.1", 4096), ("1.1", 65536), ("0.10", 65536), ("1.1", 2 << 20)])
    func convertedImages(compat: String, clusterSize: Int) throws {
        let folder = try ScratchFolder()
        let content = diskPattern(count: clusterSize == 2 << 20 ? 10 << 20 : 3 << 20, seed: UInt64(clusterSize), grain: max(clusterSize, 4096))
        try writeFile(folder.file("source.raw"), content)
        try Qemu.run(Qemu.img, ["convert", "-f", "raw", "-O", "qcow2", "-o", "compat=\(compat),cluster_size=\(clusterSize)",
                                folder.file("source.raw"), folder.file("image.qcow2")])
        let image = try QcowImage(path: folder.file("image.qcow2"), options: .init(readOnly: true))
        #expect(image.header.version == (compat == "0.10" ? 2 : 3))
        #expect(image.clusterSize == clusterSize)
        #expect(image.size == UInt64(content.count))
        #expect(try Self.readAll(image) == content)
        let info = try image.info()
        #expect(info.allocatedClusters > 0)
        #expect(info.allocatedClusters < content.count / clusterSize + 1, "zero runs stay unallocated")
        #expect(try image.check().isClean)
    }

    @Test("Compressed clusters (qemu-img convert -c) inflate to the original bytes", arguments: [512, 4096, 65536])
    func compressedImages(clusterSize: Int) throws {
        let folder = try ScratchFolder()
        let content = diskPattern(count: 2 << 20, seed: 7, grain: 4096, compressible: true)
        try writeFile(folder.file("source.raw"), content)
        try Qemu.run(Qemu.img, ["convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=\(clusterSize)",
                                folder.file("source.raw"), folder.file("image.qcow2")])
        let image = try QcowImage(path: folder.file("image.qcow2"), options: .init(readOnly: true))
        #expect(try image.info().compressedClusters > 0)
        #expect(try Self.readAll(image, piece: 77_777) == content)
        #expect(try image.check().isClean)
    }

    @Test("A chain raw <- qcow2 <- qcow2 (relative names, zero clusters over backing data) reads like qemu-img convert")
    func backingChain() throws {
        let folder = try ScratchFolder()
        let size = 4 << 20
        try writeFile(folder.file("base.raw"), diskPattern(count: size - 65536, seed: 3))  // shorter than the overlays
        try Qemu.run(Qemu.img, ["create", "-f", "qcow2", "-o", "cluster_size=4096", "-b", "base.raw", "-F", "raw",
                                folder.file("middle.qcow2"), "\(size)"])
        try Qemu.run(Qemu.io, ["-c", "write -P 0x11 8k 100k", "-c", "write -P 0x22 1m 3k", "-c", "write -z 2m 64k",
                               "-c", "write -P 0x33 4032k 64k", folder.file("middle.qcow2")])
        try Qemu.run(Qemu.img, ["create", "-f", "qcow2", "-b", "middle.qcow2", "-F", "qcow2", folder.file("top.qcow2"), "\(size)"])
        try Qemu.run(Qemu.io, ["-c", "write -P 0x44 60k 10k", "-c", "write -z 1m 1k", "-c", "write -z -u 3m 128k",
                               "-c", "discard 64k 64k", folder.file("top.qcow2")])
        try Qemu.run(Qemu.img, ["convert", "-O", "raw", folder.file("top.qcow2"), folder.file("expected.raw")])
        let expected = try readFile(folder.file("expected.raw"))

        let top = try QcowImage(path: folder.file("top.qcow2"), options: .init(readOnly: true, backingFiles: true))
        #expect(top.backingPath == folder.file("middle.qcow2"))
        #expect(try Self.readAll(top) == expected)
        let viaDetection = try DiskImage.open(path: folder.file("top.qcow2"), options: .init(readOnly: true, backingFiles: true))
        #expect(try Self.readAll(viaDetection, piece: 1 << 20) == expected)
    }

    @Test("A version 2 image over a raw backing file reads like qemu-img convert")
    func version2Backing() throws {
        let folder = try ScratchFolder()
        try writeFile(folder.file("base.raw"), diskPattern(count: 1 << 20, seed: 9))
        try Qemu.run(Qemu.img, ["create", "-f", "qcow2", "-o", "compat=0.10,cluster_size=512", "-b", folder.file("base.raw"),
                                "-F", "raw", folder.file("v2.qcow2")])
        try Qemu.run(Qemu.io, ["-c", "write -P 0x5a 1000 5000", "-c", "write -z 8k 4k", folder.file("v2.qcow2")])
        try Qemu.run(Qemu.img, ["convert", "-O", "raw", folder.file("v2.qcow2"), folder.file("expected.raw")])
        let image = try QcowImage(path: folder.file("v2.qcow2"), options: .init(readOnly: true, backingFiles: true))
        #expect(image.header.version == 2)
        #expect(try Self.readAll(image) == (try readFile(folder.file("expected.raw"))))
    }

    @Test("Zero clusters written by qemu-io (with and without unmap) read as zeroes")
    func zeroClusters() throws {
        let folder = try ScratchFolder()
        let content = diskPattern(count: 1 << 20, seed: 11, grain: 65536)
        try writeFile(folder.file("source.raw"), content)
        try Qemu.run(Qemu.img, ["convert", "-O", "qcow2", folder.file("source.raw"), folder.file("image.qcow2")])
        try Qemu.run(Qemu.io, ["-c", "write -z 0 128k", "-c", "write -z -u 256k 64k", folder.file("image.qcow2")])
        var expected = content
        for index in 0..<(128 << 10) { expected[index] = 0 }
        for index in (256 << 10)..<(320 << 10) { expected[index] = 0 }
        let image = try QcowImage(path: folder.file("image.qcow2"), options: .init(readOnly: true))
        #expect(try Self.readAll(image) == expected)
        #expect(try image.info().zeroClusters > 0)
    }
}
