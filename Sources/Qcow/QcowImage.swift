#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BlockStorage
import Synchronization

/// A qcow2 image (versions 2 and 3) as a ``BlockBackend``: reads of allocated, zero,
/// unallocated (backing file or zeroes) and deflate-compressed clusters; writes with cluster
/// allocation, refcount updates and copy-on-write; write-zeroes and discard through the L2
/// entries; crash-safe ordering of metadata writes (see ``QcowEngine``).
///
/// Backing files (raw or qcow2, chained, relative names resolved against the image's folder)
/// are opened read-only with a shared lock when ``Options/backingFiles`` allows them; loops
/// in a chain are refused. The image file itself gets the same open-file-description lock as
/// a raw image (exclusive when writable, shared when read-only).
///
/// Not supported, and refused at open with a message saying so: encryption, external data
/// files, extended L2 entries, compression other than deflate, and writing to images with
/// internal snapshots or with the dirty bit set (lazy refcounts; this engine does not
/// rebuild refcounts: run `qemu-img check -r all`, or open read-only).
///
/// Every call takes one internal mutex, so the image may be shared between threads. With
/// ``Options/ioUring`` the image also maps requests for ``AsyncBlockQueue``s
/// (`QcowImage+Async.swift`).
public final class QcowImage: BlockBackend {
    /// How to open an image.
    public struct Options: Sendable, Equatable {
        /// Open read-only; writes are refused with ``BlockError/readOnly``.
        public var readOnly: Bool
        /// Open the image (and its backing files) with `O_DIRECT`.
        public var direct: Bool
        /// Allow a backing file (Cloud Hypervisor's `backing_files=on`); off refuses an image that has one.
        public var backingFiles: Bool
        /// The image lock (Cloud Hypervisor's default: a byte-range lock over the image).
        public var lock: ImageLock
        /// Offer asynchronous queues (``makeAsyncQueue(slots:)``): the data of allocated
        /// clusters moves through io_uring, the mapping stays synchronous.
        public var ioUring: Bool

        /// Writable, cached, locked, synchronous, and refusing backing files unless asked (Cloud Hypervisor's defaults).
        public init(readOnly: Bool = false, direct: Bool = false, backingFiles: Bool = false, lock: ImageLock = .byteRange,
                    ioUring: Bool = false) {
            self.readOnly = readOnly
            self.direct = direct
            self.backingFiles = backingFiles
            self.lock = lock
            self.ioUring = ioUring
        }
    }

    /// The deepest backing chain followed.
    public static let maxChainDepth = 64

    /// The path the image was opened from.
    public let path: String
    /// Whether writes are refused.
    public let isReadOnly: Bool
    /// The header as it was when the image was opened.
    public let header: QcowHeader
    /// The backing file's path as resolved (nil without a backing file).
    public let backingPath: String?
    private let isDirect: Bool
    /// Whether ``makeAsyncQueue(slots:)`` makes io_uring queues.
    public let usesIoUring: Bool
    private let engine: Mutex<QcowEngine>
    private let currentSize: Atomic<UInt64>

    /// The virtual disk size in bytes.
    public var size: UInt64 { currentSize.load(ordering: .acquiring) }
    /// Discard frees clusters on writable images.
    public var supportsDiscard: Bool { !isReadOnly }
    /// 4096 with `O_DIRECT`, 1 otherwise.
    public var preferredAlignment: Int { isDirect ? ImageFile.directAlignment : 1 }
    /// The cluster size in bytes.
    public var clusterSize: Int { header.clusterSize }

    /// Opens the qcow2 image at `path`.
    ///
    /// - Throws: ``BlockError/locked(path:)`` when another process holds the image;
    ///   ``BlockError/corrupt(_:)`` for a damaged image; ``BlockError/unsupported(_:)`` for a
    ///   feature this engine does not implement or a backing file that is not allowed;
    ///   ``BlockError/host(call:errno:)`` when a file cannot be opened.
    public convenience init(path: String, options: Options = Options()) throws(BlockError) {
        try self.init(path: path, options: options, chain: [])
    }

    init(path: String, options: Options, chain: [String]) throws(BlockError) {
        let canonical = try canonicalPath(path, what: "open(\(path))")
        var resolved: String?
        let engine = try QcowEngine(path: path, readOnly: options.readOnly, direct: options.direct, lock: options.lock) {
            header throws(BlockError) -> (any BlockBackend)? in
            guard let name = header.backingFile else { return nil }
            guard options.backingFiles else {
                throw .unsupported("open \(path) with its backing file \(name): backing files are off (use backing_files=on to allow them)")
            }
            let backingPath = name.hasPrefix("/") ? name : directoryOf(path) + "/" + name
            resolved = backingPath
            return try Self.openBacking(path: backingPath, format: header.backingFormat, of: path,
                                        options: options, chain: chain + [canonical])
        }
        self.path = path
        isReadOnly = options.readOnly
        isDirect = options.direct
        usesIoUring = options.ioUring
        header = engine.header
        backingPath = resolved
        currentSize = Atomic(engine.virtualSize)
        self.engine = Mutex(engine)
    }

    /// Opens a backing file read-only (shared lock) as raw or qcow2, by its recorded format or by its magic.
    static func openBacking(path: String, format: String?, of image: String, options: Options,
                            chain: [String]) throws(BlockError) -> any BlockBackend {
        let canonical = try canonicalPath(path, what: "open backing file \(path) of \(image)")
        if chain.contains(canonical) {
            throw .corrupt("the backing chain loops: \((chain + [canonical]).joined(separator: " -> "))")
        }
        guard chain.count < maxChainDepth else {
            throw .unsupported("follow a backing chain deeper than \(maxChainDepth) images (at \(path))")
        }
        let kind: ImageFormat
        switch format {
        case nil: kind = try ImageFormat.detect(path: path)
        case "raw"?: kind = .raw
        case "qcow2"?: kind = .qcow2
        case let other?: throw .unsupported("open backing file \(path) of format \(other) (only raw and qcow2)")
        }
        do {
            switch kind {
            case .raw:
                return try RawFileBackend(path: path, options: .init(readOnly: true, direct: options.direct, lock: options.lock))
            case .qcow2:
                let backingOptions = Options(readOnly: true, direct: options.direct, backingFiles: true, lock: options.lock)
                return try QcowImage(path: path, options: backingOptions, chain: chain)
            }
        } catch .corrupt(let message) where !message.hasPrefix("the backing chain") {
            throw .corrupt("backing file \(path): \(message)")
        }
    }

    /// Runs `body` on the engine under the image's mutex.
    func locked<T: Sendable>(_ body: (QcowEngine) throws(BlockError) -> T) throws(BlockError) -> T {
        try engine.withLock { (engine: inout QcowEngine) throws(BlockError) -> T in try body(engine) }
    }

    // MARK: - BlockBackend

    /// Reads guest bytes (see ``QcowEngine`` for how each kind of cluster reads).
    public func read(into buffers: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(BlockError) {
        let scatter = Scatter(buffers)
        try checkRange(offset: offset, length: UInt64(scatter.count))
        if scatter.count == 0 { return }
        try locked { engine throws(BlockError) in try engine.read(into: scatter, at: offset) }
    }

    /// Writes guest bytes, allocating clusters as needed.
    public func write(from buffers: [UnsafeRawBufferPointer], at offset: UInt64) throws(BlockError) {
        if isReadOnly { throw .readOnly }
        // SAFETY: the write path only reads through these pointers, which the caller lends for this call.
        let scatter = Scatter(buffers.map { UnsafeMutableRawBufferPointer(mutating: $0) })
        try checkRange(offset: offset, length: UInt64(scatter.count))
        if scatter.count == 0 { return }
        try locked { engine throws(BlockError) in try engine.write(from: scatter, at: offset) }
    }

    /// Writes every cached table in crash-safe order and `fdatasync`s the file.
    public func flush() throws(BlockError) {
        if isReadOnly { return }
        try locked { engine throws(BlockError) in try engine.flush() }
    }

    /// Releases the locks of the image file and of its backing chain, keeping them open.
    public func releaseLocks() {
        engine.withLock { engine in
            engine.file.releaseLock()
            engine.backing?.releaseLocks()
        }
    }

    /// Takes the locks of the image file and of its backing chain again.
    public func retakeLocks() throws(BlockError) {
        try locked { engine throws(BlockError) in
            try engine.file.retakeLock()
            try engine.backing?.retakeLocks()
        }
    }

    /// Frees the clusters of the range; it reads back as zeroes.
    public func discard(offset: UInt64, length: UInt64) throws(BlockError) {
        try writeZeroes(offset: offset, length: length, unmap: true)
    }

    /// Makes the range read as zeroes through L2 entries (zero flag or unallocated); `unmap`
    /// also frees the host clusters.
    public func writeZeroes(offset: UInt64, length: UInt64, unmap: Bool) throws(BlockError) {
        if isReadOnly { throw .readOnly }
        try checkRange(offset: offset, length: length)
        if length == 0 { return }
        try locked { engine throws(BlockError) in try engine.writeZeroes(offset: offset, length: length, unmap: unmap) }
    }

    /// Grows the virtual disk to `newSize` bytes (a multiple of 512); shrinking is refused.
    public func resize(to newSize: UInt64) throws(BlockError) {
        if isReadOnly { throw .readOnly }
        try locked { engine throws(BlockError) in try engine.resize(to: newSize) }
        currentSize.store(newSize, ordering: .releasing)
    }

    deinit {
        // Best effort: a caller that wants to know about failures calls flush() first.
        if !isReadOnly { try? flush() }
    }
}

/// The directory part of `path` ("." for a bare name).
func directoryOf(_ path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "" : String(path[..<slash])
}

/// `realpath(3)` of `path`, for loop detection in backing chains.
func canonicalPath(_ path: String, what: String) throws(BlockError) -> String {
    guard let resolved = realpath(path, nil) else { throw .host(call: what, errno: errno) }
    defer { free(resolved) }
    return String(cString: resolved)
}
