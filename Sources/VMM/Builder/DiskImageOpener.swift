#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BlockStorage

/// Opens the image behind a `--disk` as a ``BlockBackend``.
enum DiskImageOpener {
    /// The backend for `config`: a raw image (qcow2 is refused until the Qcow engine lands),
    /// locked against a second writer, read-only and `O_DIRECT` as asked.
    static func open(_ config: DiskConfig) throws -> any BlockBackend {
        guard let path = config.path else { throw ConfigError(option: "--disk", "path= is required") }
        let options = RawFileBackend.Options(readOnly: config.readonly, direct: config.direct)
        do {
            let format = try detect(path: path)
            switch config.imageType ?? .unknown {
            case .raw: break
            case .unknown:
                if format == .qcow2 {
                    throw ConfigError(option: "--disk", "\(path) is a qcow2 image, which is not supported yet; convert it with qemu-img convert -O raw")
                }
            default:
                throw ConfigError(option: "--disk", "image_type \(config.imageType!.rawValue) is not supported yet for \(path)")
            }
            return try RawFileBackend(path: path, options: options)
        } catch let error as BlockError {
            throw ConfigError(option: "--disk", "cannot open \(path): \(error)")
        }
    }

    /// The format the image's first bytes announce.
    static func detect(path: String) throws(BlockError) -> DiskImageType {
        let probe = try RawFileBackend(path: path, options: .init(readOnly: true, lock: false))
        guard probe.size >= 4 else { return .raw }
        let magic = try probe.readBytes(count: 4, at: 0)
        return magic == [0x51, 0x46, 0x49, 0xFB] ? .qcow2 : .raw
    }

    /// Cloud Hypervisor's serial for a disk without `serial=`: the image's device and inode
    /// numbers, so that it stays the same across boots (at most 20 bytes).
    static func defaultSerial(path: String) -> [UInt8] {
        var info = stat()
        guard stat(path, &info) == 0 else { return [] }
        return Array("\(info.st_dev)\(info.st_rdev)\(info.st_ino)".utf8.prefix(20))
    }
}
