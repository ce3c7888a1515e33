#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BlockStorage
import HostSystem

/// The disk image formats this module opens (Cloud Hypervisor's `image_type=raw|qcow2`).
public enum ImageFormat: String, Sendable, CaseIterable {
    /// The file's bytes are the disk's bytes.
    case raw
    /// A qcow2 image.
    case qcow2

    /// The format of the file at `path`: qcow2 when it starts with the magic `QFI\xfb`,
    /// raw otherwise (shorter files included).
    ///
    /// Probing is what Cloud Hypervisor does without `image_type`; a guest that writes a
    /// qcow2 header into a raw disk changes what the next probe sees, which is why backing
    /// files stay off unless ``DiskImage/Options/backingFiles`` allows them.
    public static func detect(path: String) throws(BlockError) -> ImageFormat {
        let file: OwnedFileDescriptor
        do { file = try OwnedFileDescriptor(path: path, flags: O_RDONLY) } catch {
            throw .host(call: "open(\(path))", errno: error.errno)
        }
        var magic = [UInt8](repeating: 0, count: 4)
        let count = magic.withUnsafeMutableBytes { raw in pread(file.rawValue, raw.baseAddress, 4, 0) }
        if count < 0 { throw .host(call: "pread(\(path))", errno: errno) }
        return count == 4 && magic.bigEndian32(at: 0) == QcowHeader.magic ? .qcow2 : .raw
    }
}

/// Opens disk images of any supported format as a ``BlockBackend``.
public enum DiskImage {
    /// How to open a disk image (the image-related parts of Cloud Hypervisor's `--disk`).
    public struct Options: Sendable, Equatable {
        /// The format; nil probes the file (`image_type` left out).
        public var format: ImageFormat?
        /// Open read-only (`readonly=on`).
        public var readOnly: Bool
        /// Open with `O_DIRECT` (`direct=on`).
        public var direct: Bool
        /// Allow qcow2 backing files (`backing_files=on`; off by default, as in Cloud Hypervisor).
        public var backingFiles: Bool
        /// The image lock (Cloud Hypervisor's default: a byte-range lock over the image).
        public var lock: ImageLock
        /// Let the image offer io_uring queues (``RawFileBackend/Options/ioUring``,
        /// ``QcowImage/Options/ioUring``).
        public var ioUring: Bool

        /// Probed format, writable, cached, no backing files, locked, synchronous.
        public init(format: ImageFormat? = nil, readOnly: Bool = false, direct: Bool = false,
                    backingFiles: Bool = false, lock: ImageLock = .byteRange, ioUring: Bool = false) {
            self.format = format
            self.readOnly = readOnly
            self.direct = direct
            self.backingFiles = backingFiles
            self.lock = lock
            self.ioUring = ioUring
        }
    }

    /// Opens the image at `path` as a raw file (``RawFileBackend``) or a qcow2 image
    /// (``QcowImage``), by `options.format` or by probing its first bytes.
    public static func open(path: String, options: Options = Options()) throws(BlockError) -> any BlockBackend {
        let format: ImageFormat
        if let forced = options.format { format = forced } else { format = try ImageFormat.detect(path: path) }
        switch format {
        case .raw:
            return try RawFileBackend(path: path, options: .init(readOnly: options.readOnly, direct: options.direct, lock: options.lock,
                                                                 ioUring: options.ioUring))
        case .qcow2:
            return try QcowImage(path: path, options: .init(readOnly: options.readOnly, direct: options.direct,
                                                             backingFiles: options.backingFiles, lock: options.lock,
                                                             ioUring: options.ioUring))
        }
    }
}
