import BlockStorage
import Foundation
import Qcow
import Testing

/// Format detection, forced formats, backing-file policy, chains that loop, and image locks.
@Suite("Disk image detection and options")
struct DiskImageTests {
    @Test("qcow2 is detected by its magic and anything else opens raw; the format can be forced")
    func detection() throws {
        let folder = try ScratchFolder()
        try QcowImage.create(path: folder.file("a.qcow2"), size: 1 << 20, clusterSize: 65536)
        try writeFile(folder.file("a.raw"), [UInt8](repeating: 7, count: 8192))
        try writeFile(folder.file("tiny.raw"), [0x51, 0x46])
        #expect(try ImageFormat.detect(path: folder.file("a.qcow2")) == .qcow2)
        #expect(try ImageFormat.detect(path: folder.file("a.raw")) == .raw)
        #expect(try ImageFormat.detect(path: folder.file("tiny.raw")) == .raw)

        let qcow = try DiskImage.open(path: folder.file("a.qcow2"), options: .init(readOnly: true))
        #expect(qcow is QcowImage)
        #expect(qcow.size == 1 << 20)
        let raw = try DiskImage.open(path: folder.file("a.raw"), options: .init(readOnly: true))
        #expect(raw is RawFileBackend)
        // image_type=raw on a qcow2 file shows the container's bytes.
        let forced = try DiskImage.open(path: folder.file("a.qcow2"), options: .init(format: .raw, readOnly: true))
        #expect(try forced.readBytes(count: 4, at: 0) == [0x51, 0x46, 0x49, 0xFB])
        // image_type=qcow2 on a raw file is refused.
        #expect(throws: BlockError.self) {
            _ = try DiskImage.open(path: folder.file("a.raw"), options: .init(format: .qcow2, readOnly: true))
        }
    }

    @Test("backing_files=off refuses an image with a backing file; on follows it")
    func backingFilesOption() throws {
        let folder = try ScratchFolder()
        try writeFile(folder.file("base.raw"), [UInt8](repeating: 0x3C, count: 1 << 20))
        try QcowImage.create(path: folder.file("overlay.qcow2"), size: nil, backing: "base.raw", backingFormat: .raw)
        let error = #expect(throws: BlockError.self) { _ = try DiskImage.open(path: folder.file("overlay.qcow2")) }
        #expect("\(error!)".contains("backing_files=on"))
        let disk = try DiskImage.open(path: folder.file("overlay.qcow2"), options: .init(backingFiles: true))
        #expect(disk.size == 1 << 20)
        #expect(try disk.readBytes(count: 3, at: 5000) == [0x3C, 0x3C, 0x3C])
        try disk.write(bytes: [1, 2, 3], at: 5000)
        #expect(try disk.readBytes(count: 4, at: 4999) == [0x3C, 1, 2, 3])
        #expect(try readFile(folder.file("base.raw"))[5000] == 0x3C, "the backing file is never written")
    }

    @Test("A backing chain that loops is refused", arguments: [1, 2, 3])
    func loops(length: Int) throws {
        let folder = try ScratchFolder()
        let names = (0..<length).map { "image\($0).qcow2" }
        for (index, name) in names.enumerated() {
            try QcowImage.create(path: folder.file(name), size: 1 << 20, backing: names[(index + 1) % length], backingFormat: .qcow2)
        }
        let error = #expect(throws: BlockError.self) {
            _ = try QcowImage(path: folder.file(names[0]), options: .init(readOnly: true, backingFiles: true))
        }
        #expect("\(error!)".contains("loops"))
    }

    @Test("A missing backing file is named in the error")
    func missingBacking() throws {
        let folder = try ScratchFolder()
        try QcowImage.create(path: folder.file("orphan.qcow2"), size: 1 << 20, backing: "gone.raw", backingFormat: .raw)
        let error = #expect(throws: BlockError.self) {
            _ = try QcowImage(path: folder.file("orphan.qcow2"), options: .init(readOnly: true, backingFiles: true))
        }
        #expect("\(error!)".contains("gone.raw"))
    }

    @Test("A writable qcow2 image is locked against a second open; read-only opens share")
    func locks() throws {
        let folder = try ScratchFolder()
        let path = folder.file("locked.qcow2")
        try QcowImage.create(path: path, size: 1 << 20)
        do {
            let writer = try QcowImage(path: path)
            #expect(throws: BlockError.locked(path: path)) { _ = try QcowImage(path: path) }
            #expect(throws: BlockError.locked(path: path)) { _ = try QcowImage(path: path, options: .init(readOnly: true)) }
            #expect(throws: BlockError.locked(path: path)) { _ = try DiskImage.open(path: path, options: .init(format: .raw)) }
            _ = writer
        }
        let first = try QcowImage(path: path, options: .init(readOnly: true))
        let second = try QcowImage(path: path, options: .init(readOnly: true))
        #expect(throws: BlockError.locked(path: path)) { _ = try QcowImage(path: path) }
        #expect(throws: BlockError.readOnly) { try first.write(bytes: [1], at: 0) }
        _ = second
    }

    @Test("O_DIRECT images (direct=on) read and write through aligned bounce buffers")
    func directIO() throws {
        let folder = try ScratchFolder(onDisk: true)
        let path = folder.file("direct.qcow2")
        try QcowImage.create(path: path, size: 4 << 20, clusterSize: 4096)
        guard let image = try? QcowImage(path: path, options: .init(direct: true)) else {
            print("skipped: \(folder.path) does not support O_DIRECT")
            return
        }
        #expect(image.preferredAlignment == 4096)
        let pattern = diskPattern(count: 100_000, seed: 4)
        try image.write(bytes: pattern, at: 777)
        try image.writeZeroes(offset: 8192, length: 4096, unmap: true)
        try image.flush()
        var expected = pattern
        for index in (8192 - 777)..<(8192 - 777 + 4096) { expected[index] = 0 }
        #expect(try image.readBytes(count: 100_000, at: 777) == expected)
        #expect(try image.check().isClean)
    }
}
