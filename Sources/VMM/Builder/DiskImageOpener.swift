#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BlockStorage
import Qcow

/// Opens the image behind a `--disk` as a ``BlockBackend``.
public enum DiskImageOpener {
    /// The backend for `config`: raw or qcow2 (detected by magic unless `image_type=` forces
    /// one), locked against a second writer, read-only and `O_DIRECT` as asked, with a qcow2
    /// backing file only when `backing_files=on`.
    static func open(_ config: DiskConfig) throws -> any BlockBackend {
        guard let path = config.path else { throw ConfigError(option: "--disk", "path= is required") }
        let format: ImageFormat?
        switch config.imageType ?? .unknown {
        case .raw: format = .raw
        case .qcow2: format = .qcow2
        case .unknown: format = nil
        case .fixedVhd, .vhdx:
            throw ConfigError(option: "--disk", "image_type \(config.imageType!.rawValue) is not supported for \(path); use raw or qcow2")
        }
        let options = DiskImage.Options(format: format, readOnly: config.readonly, direct: config.direct,
                                        backingFiles: config.backingFiles,
                                        lock: config.lockGranularity == .full ? .wholeFile : .byteRange,
                                        ioUring: useIoUring(config))
        do {
            return try DiskImage.open(path: path, options: options)
        } catch {
            throw ConfigError(option: "--disk", "cannot open \(path): \(error)")
        }
    }

    /// Whether `config`'s disk may use io_uring: unless `_disable_io_uring=on`, when the host
    /// has it (Cloud Hypervisor's `block_io_uring_is_supported`, probed once).
    static func useIoUring(_ config: DiskConfig) -> Bool {
        !config.disableIoUring && IoUringEngine.isSupported
    }

    /// Cloud Hypervisor's serial for a disk without `serial=`: the image's device and inode
    /// numbers, so that it stays the same across boots (at most 20 bytes).
    public static func defaultSerial(path: String) -> [UInt8] {
        var info = stat()
        guard stat(path, &info) == 0 else { return [] }
        return Array("\(info.st_dev)\(info.st_rdev)\(info.st_ino)".utf8.prefix(20))
    }
}
