// vhost_user_block: serves a raw or qcow2 image to a vhost-user-blk front-end (cloud-hypervisor's
// `--disk vhost_user=on,socket=`, QEMU's `vhost-user-blk-pci`), as Cloud Hypervisor's command of
// the same name: one `--block-backend` option, one front-end connection, then the process exits.
#if canImport(Glibc)
import Glibc
#endif
import BlockStorage
import HostSystem
import Logging
import Qcow
import VMM
import VhostUserBackend
import VirtioDevices

/// Cloud Hypervisor's syntax line for `--block-backend`.
let syntax = "vhost-user-block backend parameters \"path=<image_path>,socket=<socket_path>,num_queues=<number_of_queues>,"
    + "queue_size=<size_of_each_queue>,readonly=true|false,direct=true|false,poll_queue=true|false\""

/// `--block-backend`'s values, with Cloud Hypervisor's defaults.
struct BlockBackendConfig {
    var path: String
    var socket: String
    var numQueues = 1
    var queueSize: UInt16 = 1024
    var readonly = false
    var direct = false
    /// Accepted as Cloud Hypervisor's option; the rings are served on each kick, without the
    /// 50 µs busy poll Cloud Hypervisor's back-end adds after one.
    var pollQueue = true

    init(_ text: String) throws {
        let list = try OptionList(text, option: "--block-backend",
                                  knownKeys: ["path", "socket", "num_queues", "queue_size", "readonly", "direct", "poll_queue"])
        guard let path = list["path"] else { throw ConfigError(option: "--block-backend", "path= is required (\(syntax))") }
        guard let socket = list["socket"] else { throw ConfigError(option: "--block-backend", "socket= is required (\(syntax))") }
        self.path = path
        self.socket = socket
        numQueues = Int(try list.integer("num_queues", as: UInt16.self, in: 1...64) ?? 1)
        queueSize = try list.integer("queue_size", as: UInt16.self, in: 1...32768) ?? 1024
        guard queueSize & (queueSize - 1) == 0 else {
            throw ConfigError(option: "--block-backend", "queue_size \(queueSize) is not a power of two")
        }
        readonly = try list.bool("readonly") ?? false
        direct = try list.bool("direct") ?? false
        pollQueue = try list.bool("poll_queue") ?? true
    }
}

let command = BackendCommand(program: "vhost_user_block", option: "--block-backend", about: "Launch a vhost-user-blk backend.", syntax: syntax,
                             version: VMMVersion.build)
let backendText = command.optionValue(Array(CommandLine.arguments.dropFirst()))
let logger = command.bootstrapLogging()

let config: BlockBackendConfig
do {
    config = try BlockBackendConfig(backendText)
} catch {
    command.fail("\(error)")
}

let image: any BlockBackend
do {
    image = try DiskImage.open(path: config.path, options: DiskImage.Options(readOnly: config.readonly, direct: config.direct))
} catch {
    command.fail("cannot open \(config.path): \(error)")
}
// The serial Cloud Hypervisor gives a disk without `serial=` (device and inode numbers).
let serial = DiskImageOpener.defaultSerial(path: config.path)
let device = VirtioBlock(backend: image, options: VirtioBlock.Options(serial: serial, queueCount: config.numQueues, queueSize: config.queueSize))

let backend: VhostUserDeviceBackend
do {
    backend = try VhostUserDeviceBackend(device: device, logger: logger)
} catch {
    command.fail("\(error)")
}
logger.info("serving \(config.path) (\(image.size) bytes) on \(config.socket)")
if let reason = backend.run(socketPath: config.socket) {
    command.fail("front-end connection ended: \(reason)")
}
logger.info("front-end disconnected")
exit(0)
