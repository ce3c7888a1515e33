// vhost_user_net: serves a TAP interface to a vhost-user-net front-end (cloud-hypervisor's
// `--net vhost_user=on,socket=`, QEMU's `-netdev vhost-user`), as Cloud Hypervisor's command of
// the same name: one `--net-backend` option, one front-end connection, then the process exits.
#if canImport(Glibc)
import Glibc
#endif
import HostSystem
import Logging
import VMM
import VhostUserBackend
import VirtioDevices

/// Cloud Hypervisor's syntax line for `--net-backend`.
let syntax = "vhost-user-net backend parameters \"ip=<ip_addr>,mask=<net_mask>,socket=<socket_path>,client=on|off,"
    + "num_queues=<number_of_queues>,queue_size=<size_of_each_queue>,tap=<if_name>\""

/// `--net-backend`'s values, with Cloud Hypervisor's defaults.
struct NetBackendConfig {
    var tap: String?
    var ip = "192.168.100.1"
    var mask = "255.255.255.0"
    var hostMAC: MACAddress?
    var mtu: UInt16?
    var queueSize: UInt16 = 256
    var numQueues = 2
    var socket: String
    var client = false

    init(_ text: String) throws {
        let option = "--net-backend"
        let list = try OptionList(text, option: option,
                                  knownKeys: ["tap", "ip", "host_mac", "mask", "mtu", "queue_size", "num_queues", "socket", "client"])
        guard let socket = list["socket"] else { throw ConfigError(option: option, "socket= is required (\(syntax))") }
        self.socket = socket
        tap = list["tap"]
        if let ip = list["ip"] {
            guard TapInterface.parseIPv4(ip) != nil else { throw ConfigError(option: option, "ip=\(ip) is not an IPv4 address") }
            self.ip = ip
        }
        if let mask = list["mask"] {
            guard TapInterface.parseIPv4(mask) != nil else { throw ConfigError(option: option, "mask=\(mask) is not an IPv4 address") }
            self.mask = mask
        }
        if let text = list["host_mac"] {
            guard let mac = MACAddress(text) else { throw ConfigError(option: option, "host_mac=\(text) is not a MAC address") }
            hostMAC = mac
        }
        mtu = try list.integer("mtu", as: UInt16.self, in: 68...65535)
        queueSize = try list.integer("queue_size", as: UInt16.self, in: 1...32768) ?? 256
        guard queueSize & (queueSize - 1) == 0 else { throw ConfigError(option: option, "queue_size \(queueSize) is not a power of two") }
        numQueues = Int(try list.integer("num_queues", as: UInt16.self, in: 2...2) ?? 2)
        client = try list.bool("client") ?? false
    }
}

let command = BackendCommand(program: "vhost_user_net", option: "--net-backend", about: "Launch a vhost-user-net backend.", syntax: syntax,
                             version: VMMVersion.build)
let backendText = command.optionValue(Array(CommandLine.arguments.dropFirst()))
let logger = command.bootstrapLogging()

let config: NetBackendConfig
do {
    config = try NetBackendConfig(backendText)
} catch {
    command.fail("\(error) (num_queues: one queue pair, 2, is served; several pairs are absent)")
}

// The TAP's host side as Cloud Hypervisor's back-end sets it: its MAC, MTU, address and link.
let tap: TapInterface
do {
    tap = try TapInterface.open(name: config.tap, queueCount: config.numQueues / 2)
    try tap.configureHostSide(mac: config.hostMAC?.bytes, mtu: config.mtu.map(Int.init), ipv4: config.ip, netmask: config.mask)
} catch {
    command.fail("\(error)")
}
let backends = tap.queues.map { TapNetBackend(interface: tap.name, queue: $0) }
let backend: VhostUserDeviceBackend
do {
    let device = try VirtioNet(backends: backends, options: VirtioNet.Options(mtu: config.mtu, queueSize: config.queueSize))
    // The front-end serves the control queue itself: the back-end serves the data rings.
    backend = try VhostUserDeviceBackend(device: device, ringCount: config.numQueues, protocolFeatures: [.multiQueue, .replyAck],
                                         logger: logger)
    for (pair, queue) in backends.enumerated() {
        try backend.watch(queue.queue.rawValue) { _ = device.backendReadable(pair: pair) }
    }
} catch {
    command.fail("\(error)")
}
logger.info("serving \(tap.name) (\(config.ip)/\(config.mask)) on \(config.socket)\(config.client ? " as a client" : "")")
if let reason = backend.run(socketPath: config.socket, client: config.client) {
    command.fail("front-end connection ended: \(reason)")
}
logger.info("front-end disconnected")
exit(0)
