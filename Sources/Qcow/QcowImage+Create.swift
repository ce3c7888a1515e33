#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BlockStorage
import HostSystem

extension QcowImage {
    /// Creates (or overwrites) a qcow2 version 3 image at `path` with 16-bit refcounts and no
    /// data: header (with the backing format extension), refcount table, refcount blocks and
    /// an empty L1 table, in that order from cluster 0.
    ///
    /// - Parameters:
    ///   - size: the virtual size in bytes, rounded up to 512; nil takes the backing file's size.
    ///   - clusterSize: a power of two from 512 bytes to 2 MiB (64 KiB by default).
    ///   - backing: the backing file name stored in the image (relative names are relative to
    ///     the image's folder).
    ///   - backingFormat: the backing file's format, stored so that it is not probed.
    /// - Throws: ``BlockError`` naming the parameter that is out of range, or the failed call.
    public static func create(path: String, size: UInt64?, clusterSize: Int = 65536, backing: String? = nil,
                              backingFormat: ImageFormat? = nil) throws(BlockError) {
        guard clusterSize.nonzeroBitCount == 1,
              QcowHeader.clusterBitsRange.contains(UInt32(clusterSize.trailingZeroBitCount)) else {
            throw .other("the cluster size \(clusterSize) must be a power of two from 512 bytes to 2 MiB")
        }
        let cs = UInt64(clusterSize)
        var virtualSize: UInt64
        if let size {
            virtualSize = size
        } else if let backing {
            let resolved = backing.hasPrefix("/") ? backing : directoryOf(path) + "/" + backing
            let disk = try DiskImage.open(path: resolved, options: .init(format: backingFormat, readOnly: true, backingFiles: true))
            virtualSize = disk.size
        } else {
            throw .other("creating \(path) needs a size (or a backing file to take it from)")
        }
        guard virtualSize <= UInt64.max - 511 else { throw .other("the size \(virtualSize) is too large") }
        virtualSize = alignUp(virtualSize, 512)
        let l1Entries = divideRoundingUp(virtualSize, cs / 8 * cs)
        guard l1Entries * 8 <= QcowHeader.maxL1Bytes else {
            throw .other("the size \(virtualSize) needs an L1 table over 32 MiB with \(clusterSize)-byte clusters; use larger clusters")
        }
        let nameBytes = Array((backing ?? "").utf8)
        guard nameBytes.count <= 1023 else { throw .other("the backing file name is \(nameBytes.count) bytes long; at most 1023 fit") }

        // Layout: header, refcount table, refcount blocks, L1 table.
        let l1Clusters = max(1, divideRoundingUp(l1Entries * 8, cs))
        let perBlock = cs * 8 / 16
        var tableClusters: UInt64 = 1, blocks: UInt64 = 1
        while true {
            let total = 1 + tableClusters + blocks + l1Clusters
            let neededBlocks = divideRoundingUp(total, perBlock)
            let neededTable = divideRoundingUp(neededBlocks * 8, cs)
            if neededBlocks <= blocks && neededTable <= tableClusters { break }
            blocks = max(blocks, neededBlocks)
            tableClusters = max(tableClusters, neededTable)
        }
        guard tableClusters * cs <= QcowHeader.maxRefcountTableBytes else { throw .other("the image's metadata would be too large") }
        let total = 1 + tableClusters + blocks + l1Clusters
        let l1Offset = (1 + tableClusters + blocks) * cs

        var header = [UInt8](repeating: 0, count: clusterSize)
        header.setBigEndian32(QcowHeader.magic, at: 0)
        header.setBigEndian32(3, at: 4)
        header.setBigEndian32(UInt32(clusterSize.trailingZeroBitCount), at: 20)
        header.setBigEndian64(virtualSize, at: 24)
        header.setBigEndian32(UInt32(l1Entries), at: 36)
        header.setBigEndian64(l1Offset, at: 40)
        header.setBigEndian64(cs, at: 48)
        header.setBigEndian32(UInt32(tableClusters), at: 56)
        header.setBigEndian32(4, at: 96)
        header.setBigEndian32(112, at: 100)
        var position = 112
        if let backingFormat, backing != nil {
            let format = Array(backingFormat.rawValue.utf8)
            header.setBigEndian32(QcowHeader.extensionBackingFormat, at: position)
            header.setBigEndian32(UInt32(format.count), at: position + 4)
            header.replaceSubrange((position + 8)..<(position + 8 + format.count), with: format)
            position += 8 + (format.count + 7) / 8 * 8
        }
        position += 8  // the end-of-extensions marker (zeroes)
        if !nameBytes.isEmpty {
            guard position + nameBytes.count <= clusterSize else {
                throw .other("the backing file name (\(nameBytes.count) bytes) does not fit in a \(clusterSize)-byte header cluster")
            }
            header.setBigEndian64(UInt64(position), at: 8)
            header.setBigEndian32(UInt32(nameBytes.count), at: 16)
            header.replaceSubrange(position..<(position + nameBytes.count), with: nameBytes)
        }

        var table = [UInt8](repeating: 0, count: Int(tableClusters * cs))
        for block in 0..<blocks { table.setBigEndian64((1 + tableClusters + block) * cs, at: Int(block) * 8) }
        var refcounts = [UInt8](repeating: 0, count: Int(blocks * cs))
        for cluster in 0..<Int(total) { refcounts.setBigEndian16(1, at: cluster * 2) }

        let file: OwnedFileDescriptor
        do { file = try OwnedFileDescriptor(path: path, flags: O_RDWR | O_CREAT) } catch {
            throw .host(call: "open(\(path), O_CREAT)", errno: error.errno)
        }
        try lockImageFile(file.rawValue, path: path, exclusive: true)
        do { try file.truncate(to: 0) } catch { throw .host(call: "ftruncate(\(path))", errno: error.errno) }
        try writeAll(header, to: file, at: 0, path: path)
        try writeAll(table, to: file, at: cs, path: path)
        try writeAll(refcounts, to: file, at: (1 + tableClusters) * cs, path: path)
        do { try file.truncate(to: Int64(total * cs)) } catch { throw .host(call: "ftruncate(\(path))", errno: error.errno) }
        if fsync(file.rawValue) != 0 { throw .host(call: "fsync(\(path))", errno: errno) }
    }

    private static func writeAll(_ bytes: [UInt8], to file: OwnedFileDescriptor, at offset: UInt64, path: String) throws(BlockError) {
        var done = 0
        while done < bytes.count {
            let count = bytes.withUnsafeBytes { raw in
                pwrite(file.rawValue, raw.baseAddress! + done, raw.count - done, off_t(offset) + off_t(done))
            }
            if count < 0 {
                if errno == EINTR { continue }
                throw .host(call: "pwrite(\(path))", errno: errno)
            }
            done += count
        }
    }
}
