import BlockStorage
import Foundation
import Qcow
import TestSupport
import Testing

/// Applies the same random writes, write-zeroes and discards to a qcow2 image and to a model
/// array, then checks the image with qemu-img (check and compare against the model).
struct WriteWorkload {
    var model: [UInt8]
    var random: SplitMix64

    init(model: [UInt8], seed: UInt64) {
        self.model = model
        random = SplitMix64(seed: seed)
    }

    /// `count` operations: mostly writes of 1 byte to 3 clusters at any offset, some aligned
    /// whole-cluster writes, some write-zeroes (unmapping or not) and discards.
    mutating func run(on disk: any BlockBackend, operations count: Int, clusterSize: Int) throws {
        let size = model.count
        for serial in 0..<count {
            let kind = random.next() % 10
            let aligned = random.next() % 2 == 0
            var length = Int(random.next() % UInt64(3 * clusterSize)) + 1
            var offset = Int(random.next() % UInt64(size))
            if aligned {
                offset -= offset % clusterSize
                length = clusterSize * Int(1 + random.next() % 3)
            }
            length = min(length, size - offset)
            switch kind {
            case 0, 1:
                let unmap = kind == 0
                try disk.writeZeroes(offset: UInt64(offset), length: UInt64(length), unmap: unmap)
                for index in offset..<(offset + length) { model[index] = 0 }
            case 2:
                try disk.discard(offset: UInt64(offset), length: UInt64(length))
                for index in offset..<(offset + length) { model[index] = 0 }
            default:
                let fill = UInt8(truncatingIfNeeded: serial &* 37 &+ 1)
                var bytes = [UInt8](repeating: fill, count: length)
                bytes[0] = UInt8(truncatingIfNeeded: offset)
                try disk.write(bytes: bytes, at: UInt64(offset))
                model.replaceSubrange(offset..<(offset + length), with: bytes)
            }
            if serial % 50 == 49 { try disk.flush() }
        }
        try disk.flush()
    }
}

@Suite("qcow2 writes pass qemu-img check and compare", .enabled(if: Qemu.available, Qemu.reason))
struct WriteCrossValidationTests {
    /// Runs a workload on `path`, closes the image, and lets qemu-img judge the result.
    static func exercise(_ path: String, model: [UInt8], clusterSize: Int, operations: Int = 300, seed: UInt64,
                         backingFiles: Bool = false, folder: ScratchFolder,
                         sourceLocation: SourceLocation = #_sourceLocation) throws -> [UInt8] {
        var workload = WriteWorkload(model: model, seed: seed)
        do {
            let image = try QcowImage(path: path, options: .init(backingFiles: backingFiles))
            try workload.run(on: image, operations: operations, clusterSize: clusterSize)
            #expect(try ReadCrossValidationTests.readAll(image) == workload.model, sourceLocation: sourceLocation)
            let report = try image.check()
            #expect(report.isClean, "own check: \(report.messages)", sourceLocation: sourceLocation)
        }
        try Qemu.check(path, sourceLocation: sourceLocation)
        try writeFile(folder.file("model.raw"), workload.model)
        try Qemu.compare(raw: folder.file("model.raw"), qcow2: path, sourceLocation: sourceLocation)
        // Reopened, the image still reads the same.
        let reopened = try QcowImage(path: path, options: .init(readOnly: true, backingFiles: backingFiles))
        #expect(try ReadCrossValidationTests.readAll(reopened) == workload.model, sourceLocation: sourceLocation)
        return workload.model
    }

    @Test("Images made by QcowImage.create take random writes", arguments: [512, 4096, 65536])
    func createdImages(clusterSize: Int) throws {
        let folder = try ScratchFolder()
        let path = folder.file("new.qcow2")
        let size = clusterSize == 65536 ? 8 << 20 : 1 << 20
        try QcowImage.create(path: path, size: UInt64(size), clusterSize: clusterSize)
        let info = try Qemu.run(Qemu.img, ["info", "--output=json", path]).output
        #expect(info.contains("\"virtual-size\": \(size)"))
        try Qemu.check(path)
        _ = try Self.exercise(path, model: [UInt8](repeating: 0, count: size), clusterSize: clusterSize,
                              seed: UInt64(clusterSize), folder: folder)
    }

    @Test("qemu-img images with every refcount width (1 to 64 bits) and version 2 take random writes",
          arguments: [("1.1", 1), ("1.1", 2), ("1.1", 4), ("1.1", 8), ("1.1", 16), ("1.1", 32), ("1.1", 64), ("0.10", 16)])
    func refcountWidths(compat: String, bits: Int) throws {
        let folder = try ScratchFolder()
        let content = diskPattern(count: 1 << 20, seed: UInt64(bits), grain: 4096)
        try writeFile(folder.file("source.raw"), content)
        let path = folder.file("image.qcow2")
        let refcount = compat == "0.10" ? "" : ",refcount_bits=\(bits)"
        try Qemu.run(Qemu.img, ["convert", "-O", "qcow2", "-o", "compat=\(compat),cluster_size=4096\(refcount)",
                                folder.file("source.raw"), path])
        _ = try Self.exercise(path, model: content, clusterSize: 4096, seed: UInt64(bits) + 100, folder: folder)
    }

    @Test("Writes into compressed clusters decompress into new clusters")
    func compressedImage() throws {
        let folder = try ScratchFolder()
        let content = diskPattern(count: 1 << 20, seed: 5, grain: 4096, compressible: true)
        try writeFile(folder.file("source.raw"), content)
        let path = folder.file("image.qcow2")
        try Qemu.run(Qemu.img, ["convert", "-c", "-O", "qcow2", "-o", "cluster_size=4096", folder.file("source.raw"), path])
        _ = try Self.exercise(path, model: content, clusterSize: 4096, seed: 77, folder: folder)
    }

    @Test("Partial writes over a backing chain copy the rest of the cluster from below", arguments: ["raw", "qcow2"])
    func copyOnWrite(backingFormat: String) throws {
        let folder = try ScratchFolder()
        let size = 2 << 20
        let content = diskPattern(count: size - 12288, seed: 21, grain: 4096)  // a backing file shorter than the overlay
        try writeFile(folder.file("base.raw"), content)
        var base = "base.raw"
        if backingFormat == "qcow2" {
            try Qemu.run(Qemu.img, ["convert", "-O", "qcow2", "-o", "cluster_size=512", folder.file("base.raw"), folder.file("base.qcow2")])
            base = "base.qcow2"
        }
        let path = folder.file("overlay.qcow2")
        try QcowImage.create(path: path, size: UInt64(size), clusterSize: 65536, backing: base,
                             backingFormat: ImageFormat(rawValue: backingFormat))
        let model = content + [UInt8](repeating: 0, count: 12288)
        _ = try Self.exercise(path, model: model, clusterSize: 65536, seed: 99, backingFiles: true, folder: folder)
        let info = try Qemu.run(Qemu.img, ["info", path]).output
        #expect(info.contains("backing file: \(base)"))
        #expect(info.contains("backing file format: \(backingFormat)"))
    }

    @Test("Filling a 512-byte-cluster image grows the refcount table; qemu-img agrees")
    func refcountTableGrowth() throws {
        let folder = try ScratchFolder()
        let path = folder.file("small-clusters.qcow2")
        let size = 24 << 20
        try QcowImage.create(path: path, size: UInt64(size), clusterSize: 512)
        let before = try Qemu.run(Qemu.img, ["info", "--output=json", path]).output
        var model = [UInt8](repeating: 0, count: size)
        do {
            let image = try QcowImage(path: path)
            var random = SplitMix64(seed: 1)
            let chunk = 256 << 10
            for offset in stride(from: 0, to: size, by: chunk) {
                let bytes = (0..<chunk).map { _ in UInt8(truncatingIfNeeded: random.next() | 1) }
                try image.write(bytes: bytes, at: UInt64(offset))
                model.replaceSubrange(offset..<(offset + chunk), with: bytes)
            }
            try image.discard(offset: 1 << 20, length: 3 << 20)
            for index in (1 << 20)..<(4 << 20) { model[index] = 0 }
            try image.write(bytes: [UInt8](repeating: 0xEE, count: 2 << 20), at: 2 << 20)
            for index in (2 << 20)..<(4 << 20) { model[index] = 0xEE }
            try image.flush()
            #expect(try image.check().isClean)
        }
        try Qemu.check(path)
        try writeFile(folder.file("model.raw"), model)
        try Qemu.compare(raw: folder.file("model.raw"), qcow2: path)
        #expect(before.contains("\"virtual-size\": \(size)"))
    }

    @Test("Resizing grows the L1 table; the new space reads zeroes and takes writes")
    func resize() throws {
        let folder = try ScratchFolder()
        let path = folder.file("grow.qcow2")
        try QcowImage.create(path: path, size: 256 << 10, clusterSize: 512)
        var model = [UInt8](repeating: 0, count: 64 << 20)
        do {
            let image = try QcowImage(path: path)
            try image.write(bytes: [UInt8](repeating: 0x42, count: 5000), at: 1000)
            try image.resize(to: 64 << 20)
            #expect(image.size == 64 << 20)
            #expect(throws: BlockError.self) { try image.resize(to: 1 << 20) }
            try image.write(bytes: [UInt8](repeating: 0x24, count: 7000), at: (64 << 20) - 7000)
            #expect(try image.readBytes(count: 100, at: 30 << 20) == [UInt8](repeating: 0, count: 100))
            try image.flush()
        }
        model.replaceSubrange(1000..<6000, with: [UInt8](repeating: 0x42, count: 5000))
        model.replaceSubrange(((64 << 20) - 7000)..<(64 << 20), with: [UInt8](repeating: 0x24, count: 7000))
        try Qemu.check(path)
        try writeFile(folder.file("model.raw"), model)
        try Qemu.compare(raw: folder.file("model.raw"), qcow2: path)
    }
}
