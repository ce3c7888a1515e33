import BlockStorage

/// A qcow2 image header (the fields of the spec's "Header" section and the header
/// extensions this engine understands), parsed and validated against the file's length.
public struct QcowHeader: Sendable, Equatable {
    /// The magic `QFI\xfb` that starts every qcow2 file.
    public static let magic: UInt32 = 0x5146_49FB
    /// The smallest and largest cluster size exponents accepted (512 B to 2 MiB, like QEMU).
    public static let clusterBitsRange: ClosedRange<UInt32> = 9...21
    /// The largest L1 table accepted, in bytes (QEMU's limit).
    public static let maxL1Bytes: UInt64 = 32 << 20
    /// The largest refcount table accepted, in bytes (QEMU's limit).
    public static let maxRefcountTableBytes: UInt64 = 8 << 20

    /// Incompatible feature bit 0: refcounts may be stale (lazy refcounts in use).
    public static let dirtyBit: UInt64 = 1 << 0
    /// Incompatible feature bit 1: the image is known to be damaged.
    public static let corruptBit: UInt64 = 1 << 1
    /// Incompatible feature bit 2: guest data lives in an external data file.
    public static let externalDataBit: UInt64 = 1 << 2
    /// Incompatible feature bit 3: compressed clusters use `compressionType`, not deflate.
    public static let compressionTypeBit: UInt64 = 1 << 3
    /// Incompatible feature bit 4: L2 entries are 128 bits with subcluster bitmaps.
    public static let extendedL2Bit: UInt64 = 1 << 4
    /// Every incompatible bit this engine knows about (the ones it refuses included).
    static let knownIncompatible: UInt64 = 0x1F

    /// Header extension type: the end of the extension area.
    static let extensionEnd: UInt32 = 0
    /// Header extension type: the backing file's format name.
    static let extensionBackingFormat: UInt32 = 0xE279_2ACA
    /// Header extension type: the feature name table.
    static let extensionFeatureNames: UInt32 = 0x6803_F857

    /// One entry of the feature name table extension.
    public struct FeatureName: Sendable, Equatable {
        /// 0 incompatible, 1 compatible, 2 autoclear.
        public var kind: UInt8
        /// The bit number within that bitmap.
        public var bit: UInt8
        /// The feature's name.
        public var name: String
    }

    /// Format version: 2 or 3.
    public var version: UInt32
    /// Where the backing file name is stored (0: no backing file).
    public var backingFileOffset: UInt64
    /// Length of the backing file name.
    public var backingFileSize: UInt32
    /// log2 of the cluster size.
    public var clusterBits: UInt32
    /// The virtual disk size in bytes.
    public var size: UInt64
    /// 0 for no encryption (anything else is refused).
    public var cryptMethod: UInt32
    /// Entries in the active L1 table.
    public var l1Size: UInt32
    /// Where the active L1 table starts.
    public var l1TableOffset: UInt64
    /// Where the refcount table starts.
    public var refcountTableOffset: UInt64
    /// How many clusters the refcount table occupies.
    public var refcountTableClusters: UInt32
    /// How many internal snapshots the image holds.
    public var snapshotCount: UInt32
    /// Where the snapshot table starts.
    public var snapshotsOffset: UInt64
    /// Incompatible feature bits (version 3).
    public var incompatibleFeatures: UInt64 = 0
    /// Compatible feature bits (version 3).
    public var compatibleFeatures: UInt64 = 0
    /// Auto-clear feature bits (version 3).
    public var autoclearFeatures: UInt64 = 0
    /// log2 of the refcount width in bits (4 for version 2).
    public var refcountOrder: UInt32 = 4
    /// Header length in bytes (72 for version 2).
    public var headerLength: UInt32
    /// Compression type of compressed clusters (0: deflate).
    public var compressionType: UInt8 = 0
    /// The backing file name as stored (relative names are relative to the image's folder).
    public var backingFile: String?
    /// The backing file format from the header extension, when present.
    public var backingFormat: String?
    /// The feature name table, when present.
    public var featureNames: [FeatureName] = []

    /// The cluster size in bytes.
    public var clusterSize: Int { 1 << Int(clusterBits) }

    /// How many bytes of the file `parse` needs: the whole first cluster (header, extensions,
    /// backing file name), or less when the file is shorter.
    static func bytesNeeded(prefix: [UInt8], fileLength: UInt64) -> Int {
        guard prefix.count >= 24 else { return prefix.count }
        let bits = prefix.bigEndian32(at: 20)
        guard clusterBitsRange.contains(bits) else { return prefix.count }
        return Int(min(UInt64(1) << UInt64(bits), fileLength))
    }

    /// Parses and validates a header from the first cluster of a file of `fileLength` bytes.
    ///
    /// - Throws: ``BlockError/corrupt(_:)`` for a damaged header (each message names the
    ///   field), ``BlockError/unsupported(_:)`` for a valid image using a feature this engine
    ///   does not implement (encryption, external data files, zstd, extended L2 entries,
    ///   unknown incompatible features).
    public static func parse(_ bytes: [UInt8], fileLength: UInt64) throws(BlockError) -> QcowHeader {
        guard bytes.count >= 72 else { throw .corrupt("the file is \(fileLength) bytes long, shorter than a qcow2 header (72 bytes)") }
        guard bytes.bigEndian32(at: 0) == magic else { throw .corrupt("the file does not start with the qcow2 magic QFI\\xfb") }
        let version = bytes.bigEndian32(at: 4)
        guard version == 2 || version == 3 else {
            throw .unsupported("open qcow2 version \(version) images (only versions 2 and 3 exist)")
        }
        let clusterBits = bytes.bigEndian32(at: 20)
        guard clusterBitsRange.contains(clusterBits) else {
            throw .corrupt("cluster_bits is \(clusterBits); cluster sizes from 512 bytes (9) to 2 MiB (21) are supported")
        }
        let clusterSize = UInt64(1) << UInt64(clusterBits)
        guard UInt64(bytes.count) >= min(clusterSize, fileLength) else {
            throw .corrupt("the header cluster is truncated (\(bytes.count) of \(clusterSize) bytes)")
        }
        var header = QcowHeader(
            version: version, backingFileOffset: bytes.bigEndian64(at: 8), backingFileSize: bytes.bigEndian32(at: 16),
            clusterBits: clusterBits, size: bytes.bigEndian64(at: 24), cryptMethod: bytes.bigEndian32(at: 32),
            l1Size: bytes.bigEndian32(at: 36), l1TableOffset: bytes.bigEndian64(at: 40),
            refcountTableOffset: bytes.bigEndian64(at: 48), refcountTableClusters: bytes.bigEndian32(at: 56),
            snapshotCount: bytes.bigEndian32(at: 60), snapshotsOffset: bytes.bigEndian64(at: 64), headerLength: 72)
        if version == 3 {
            guard bytes.count >= 104 else { throw .corrupt("a version 3 header needs 104 bytes, the file has \(bytes.count)") }
            header.incompatibleFeatures = bytes.bigEndian64(at: 72)
            header.compatibleFeatures = bytes.bigEndian64(at: 80)
            header.autoclearFeatures = bytes.bigEndian64(at: 88)
            header.refcountOrder = bytes.bigEndian32(at: 96)
            header.headerLength = bytes.bigEndian32(at: 100)
            guard header.headerLength >= 104, header.headerLength % 8 == 0, UInt64(header.headerLength) <= clusterSize,
                  Int(header.headerLength) <= bytes.count else {
                throw .corrupt("header_length \(header.headerLength) must be a multiple of 8 from 104 to the cluster size")
            }
            if header.headerLength > 104 { header.compressionType = bytes[104] }
        }
        try header.parseExtensions(bytes)
        try header.validateFeatures()
        try header.validateLayout(fileLength: fileLength)
        if header.backingFileOffset != 0 {
            let start = header.backingFileOffset, length = UInt64(header.backingFileSize)
            guard length > 0, length <= 1023, start < clusterSize, start + length <= UInt64(bytes.count) else {
                throw .corrupt("the backing file name (\(length) bytes at offset \(start)) must be 1 to 1023 bytes inside the first cluster")
            }
            guard let name = String(validating: bytes[Int(start)..<Int(start + length)], as: UTF8.self) else {
                throw .corrupt("the backing file name is not valid UTF-8")
            }
            header.backingFile = name
        }
        return header
    }

    /// Refuses features this engine does not implement, naming them.
    private func validateFeatures() throws(BlockError) {
        if cryptMethod != 0 {
            throw .unsupported("open encrypted qcow2 images (crypt_method \(cryptMethod) is \(cryptMethod == 1 ? "AES" : cryptMethod == 2 ? "LUKS" : "unknown"))")
        }
        let unknown = incompatibleFeatures & ~Self.knownIncompatible
        if unknown != 0 {
            let bits = (0..<64).filter { unknown & (1 << UInt64($0)) != 0 }
            let names = bits.map { bit in
                featureNames.first { $0.kind == 0 && Int($0.bit) == bit }.map { "\(bit) (\($0.name))" } ?? "\(bit)"
            }
            throw .unsupported("open an image with unknown incompatible features: bit \(names.joined(separator: ", "))")
        }
        if incompatibleFeatures & Self.externalDataBit != 0 {
            throw .unsupported("open qcow2 images with an external data file (incompatible feature bit 2)")
        }
        if incompatibleFeatures & Self.extendedL2Bit != 0 {
            throw .unsupported("open qcow2 images with extended L2 entries (subclusters, incompatible feature bit 4)")
        }
        if incompatibleFeatures & Self.compressionTypeBit != 0 {
            if compressionType == 0 { throw .corrupt("the compression type bit is set but compression_type is 0 (deflate)") }
            let name = compressionType == 1 ? "zstd" : "unknown"
            throw .unsupported("read compressed clusters of type \(compressionType) (\(name)); only deflate (0) is supported")
        }
        if compressionType != 0 {
            throw .corrupt("compression_type is \(compressionType) but the compression type feature bit is not set")
        }
        if refcountOrder > 6 { throw .corrupt("refcount_order is \(refcountOrder); it may not exceed 6 (64-bit refcounts)") }
    }

    /// Checks that every table lies aligned inside the file and that the sizes agree.
    private func validateLayout(fileLength: UInt64) throws(BlockError) {
        let clusterSize = UInt64(self.clusterSize)
        let l2Coverage = clusterSize / 8 * clusterSize
        let needed = divideRoundingUp(size, l2Coverage)
        guard needed <= Self.maxL1Bytes / 8 else {
            throw .corrupt("the virtual size \(size) needs \(needed) L1 entries, more than the 32 MiB limit allows with \(clusterSize)-byte clusters")
        }
        guard UInt64(l1Size) >= needed else {
            throw .corrupt("the L1 table has \(l1Size) entries but the virtual size \(size) needs \(needed)")
        }
        guard UInt64(l1Size) * 8 <= Self.maxL1Bytes else { throw .corrupt("the L1 table (\(l1Size) entries) exceeds 32 MiB") }
        if l1Size > 0 {
            try Self.checkRegion("the L1 table", offset: l1TableOffset, length: UInt64(l1Size) * 8,
                                 clusterSize: clusterSize, fileLength: fileLength)
        }
        guard refcountTableClusters > 0 else { throw .corrupt("refcount_table_clusters is 0") }
        let tableBytes = UInt64(refcountTableClusters) * clusterSize
        guard tableBytes <= Self.maxRefcountTableBytes else {
            throw .corrupt("the refcount table (\(refcountTableClusters) clusters) exceeds the 8 MiB limit")
        }
        try Self.checkRegion("the refcount table", offset: refcountTableOffset, length: tableBytes,
                             clusterSize: clusterSize, fileLength: fileLength)
        if snapshotCount > 0 {
            guard snapshotCount <= 65536 else { throw .corrupt("nb_snapshots \(snapshotCount) exceeds 65536") }
            try Self.checkRegion("the snapshot table", offset: snapshotsOffset, length: UInt64(snapshotCount) * 40,
                                 clusterSize: clusterSize, fileLength: fileLength)
        }
    }

    /// Throws unless `[offset, offset + length)` is cluster-aligned, not the header, and inside the file.
    static func checkRegion(_ what: String, offset: UInt64, length: UInt64, clusterSize: UInt64, fileLength: UInt64) throws(BlockError) {
        guard offset != 0 else { throw .corrupt("\(what) starts at offset 0, on top of the header") }
        guard offset % clusterSize == 0 else { throw .corrupt("\(what) at offset \(offset) is not aligned to a cluster (\(clusterSize) bytes)") }
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= fileLength else {
            throw .corrupt("\(what) (\(length) bytes at offset \(offset)) reaches past the end of the file (\(fileLength) bytes)")
        }
    }

    /// Reads the header extensions: backing format and feature names; unknown ones are skipped.
    private mutating func parseExtensions(_ bytes: [UInt8]) throws(BlockError) {
        var position = Int(headerLength)
        var end = min(bytes.count, clusterSize)
        if backingFileOffset > UInt64(position) && backingFileOffset < UInt64(end) { end = Int(backingFileOffset) }
        while position + 8 <= end {
            let type = bytes.bigEndian32(at: position)
            let length = Int(bytes.bigEndian32(at: position + 4))
            let data = position + 8
            if type == Self.extensionEnd { return }
            guard length <= end - data else {
                throw .corrupt("header extension 0x\(String(type, radix: 16)) at offset \(position) (\(length) bytes) overflows the header area")
            }
            switch type {
            case Self.extensionBackingFormat:
                guard let name = String(validating: bytes[data..<(data + length)], as: UTF8.self) else {
                    throw .corrupt("the backing format header extension is not valid UTF-8")
                }
                backingFormat = name
            case Self.extensionFeatureNames:
                var entry = data
                while entry + 48 <= data + length {
                    let nameBytes = bytes[(entry + 2)..<(entry + 48)].prefix { $0 != 0 }
                    featureNames.append(FeatureName(kind: bytes[entry], bit: bytes[entry + 1], name: String(decoding: nameBytes, as: UTF8.self)))
                    entry += 48
                }
            default:
                break
            }
            position = data + (length + 7) / 8 * 8
        }
    }
}
