// `--net`: virtio-net devices over host TAP interfaces, with Cloud Hypervisor's option and
// JSON names (NetConfig).

import HostSystem
import VirtioDevices

/// One `--net`.
public struct NetConfig: Codable, Equatable, Sendable {
    /// The host TAP interface to create or attach to (`vmtap<N>` is created when absent).
    public var tap: String?
    /// The host side's IPv4 address (left unconfigured when absent).
    public var ip: String?
    /// The host side's IPv4 netmask.
    public var mask: String?
    /// The guest's Ethernet address, `xx:xx:xx:xx:xx:xx` (random locally administered when absent).
    public var mac: String?
    /// The host side's Ethernet address.
    public var hostMac: String?
    /// The MTU of both sides (the interface's own when absent).
    public var mtu: UInt16?
    /// Place the device behind the virtual IOMMU (not supported yet).
    public var iommu = false
    /// Queues: twice the number of RX/TX pairs (Cloud Hypervisor's default 2).
    public var numQueues: Int = 2
    /// Entries per queue.
    public var queueSize: UInt16 = 256
    /// Serve the device from a vhost-user-net back-end at ``vhostSocket`` (no TAP then).
    public var vhostUser = false
    /// The vhost-user socket.
    public var vhostSocket: String?
    /// The device id (`_net<N>` when not given).
    public var id: String?
    /// Already-open TAP descriptors, one per queue pair, handed over by the caller.
    public var fds: [Int32]?
    /// The PCI segment the device sits on.
    public var pciSegment: UInt16 = 0
    /// The device (slot) number on the segment's bus, chosen by the VMM when not given.
    public var pciDeviceID: UInt8?
    /// Whether the VMM connects to the vhost-user socket (`Client`, the default) or listens on it.
    public var vhostMode = VhostMode.client
    /// Offer TCP segmentation offload.
    public var offloadTSO = true
    /// Offer UDP fragmentation offload.
    public var offloadUFO = true
    /// Offer checksum offload.
    public var offloadCsum = true
    /// I/O throttling (`bw_*`, `ops_*`), applied to receive and transmit separately; `nil` for none.
    public var rateLimiterConfig: RateLimiterConfig?

    /// A device on a new TAP with Cloud Hypervisor's defaults (one queue pair of 256).
    public init(tap: String? = nil) { self.tap = tap }

    enum CodingKeys: String, CodingKey {
        case tap, ip, mask, mac, hostMac = "host_mac", mtu, iommu, numQueues = "num_queues", queueSize = "queue_size"
        case vhostUser = "vhost_user", vhostSocket = "vhost_socket", id, fds, pciSegment = "pci_segment"
        case offloadTSO = "offload_tso", offloadUFO = "offload_ufo", offloadCsum = "offload_csum"
        case rateLimiterConfig = "rate_limiter_config", pciDeviceID = "pci_device_id", vhostMode = "vhost_mode"
    }

    /// Decodes with Cloud Hypervisor's defaults for absent fields.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        tap = try c.decodeIfPresent(String.self, forKey: .tap)
        ip = try c.decodeIfPresent(String.self, forKey: .ip)
        mask = try c.decodeIfPresent(String.self, forKey: .mask)
        // A MAC address with a default (a random one) in Cloud Hypervisor, not an option: null is refused.
        mac = c.contains(.mac) ? try c.decode(String.self, forKey: .mac) : nil
        hostMac = try c.decodeIfPresent(String.self, forKey: .hostMac)
        mtu = try c.decodeIfPresent(UInt16.self, forKey: .mtu)
        iommu = try c.value(.iommu, default: false)
        // usize in Cloud Hypervisor: any u64 decodes; validation names what is out of range.
        numQueues = Int(clamping: try c.value(.numQueues, default: UInt64(2)))
        queueSize = try c.value(.queueSize, default: 256)
        vhostUser = try c.value(.vhostUser, default: false)
        vhostSocket = try c.decodeIfPresent(String.self, forKey: .vhostSocket)
        id = try c.decodeIfPresent(String.self, forKey: .id)
        // Descriptor numbers in a body mean nothing in this process: kept only as "this many
        // were named" (-1 each), as Cloud Hypervisor does; real ones come with the request
        // (SCM_RIGHTS) or from the command line's fd=.
        fds = try c.decodeIfPresent([Int32].self, forKey: .fds).map { Array(repeating: -1, count: $0.count) }
        pciSegment = try c.value(.pciSegment, default: 0)
        offloadTSO = try c.value(.offloadTSO, default: true)
        offloadUFO = try c.value(.offloadUFO, default: true)
        offloadCsum = try c.value(.offloadCsum, default: true)
        rateLimiterConfig = try c.decodeIfPresent(RateLimiterConfig.self, forKey: .rateLimiterConfig)
        pciDeviceID = try c.optional(.pciDeviceID)
        vhostMode = try c.value(.vhostMode, default: .client)
    }

    /// Encodes as Cloud Hypervisor does: descriptors are never written out, `iommu` only when set.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(tap, forKey: .tap)
        try c.encodeIfPresent(ip, forKey: .ip)
        try c.encodeIfPresent(mask, forKey: .mask)
        try c.encodeIfPresent(mac, forKey: .mac)
        try c.encodeIfPresent(hostMac, forKey: .hostMac)
        try c.encodeIfPresent(mtu, forKey: .mtu)
        try c.encodeIfTrue(iommu, forKey: .iommu)
        try c.encode(numQueues, forKey: .numQueues)
        try c.encode(queueSize, forKey: .queueSize)
        try c.encode(vhostUser, forKey: .vhostUser)
        try c.encodeIfPresent(vhostSocket, forKey: .vhostSocket)
        try c.encode(vhostMode, forKey: .vhostMode)
        try c.encodeIfPresent(id, forKey: .id)
        try c.encode(pciSegment, forKey: .pciSegment)
        try c.encodeIfPresent(pciDeviceID, forKey: .pciDeviceID)
        try c.encodeIfPresent(rateLimiterConfig, forKey: .rateLimiterConfig)
        try c.encode(offloadTSO, forKey: .offloadTSO)
        try c.encode(offloadUFO, forKey: .offloadUFO)
        try c.encode(offloadCsum, forKey: .offloadCsum)
    }

    /// The accepted `--net` syntax.
    public static let syntax = "tap=<if_name>,ip=<ip_addr>,mask=<net_mask>,mac=<mac_addr>,host_mac=<mac_addr>,mtu=<mtu>,fd=<fd1,fd2...>,iommu=on|off,num_queues=<number_of_queues>,queue_size=<size_of_each_queue>,id=<device_id>,vhost_user=on|off,socket=<vhost_user_socket_path>,vhost_mode=client|server,pci_segment=<segment_id>,pci_device_id=<pci_slot>,offload_tso=on|off,offload_ufo=on|off,offload_csum=on|off,\(RateLimiterConfig.syntax)"

    /// Parses one `--net` value (for example `tap=tap0,mac=52:54:00:12:34:56,ip=192.168.249.1,mask=255.255.255.0`).
    /// Empty values (`--net "tap=,mac=,ip=,mask="`) mean "not given", as in Cloud Hypervisor's examples.
    public static func parse(_ text: String) throws(ConfigError) -> NetConfig {
        let list = try OptionList(text, option: "--net", knownKeys: [
            "tap", "ip", "mask", "mac", "host_mac", "mtu", "fd", "iommu", "num_queues", "queue_size", "id", "vhost_user",
            "socket", "vhost_mode", "pci_segment", "pci_device_id", "offload_tso", "offload_ufo", "offload_csum",
        ] + RateLimiterConfig.keys)
        var config = NetConfig(tap: nonEmpty(list["tap"]))
        config.ip = nonEmpty(list["ip"])
        config.mask = nonEmpty(list["mask"])
        config.mac = nonEmpty(list["mac"])
        config.hostMac = nonEmpty(list["host_mac"])
        if nonEmpty(list["mtu"]) != nil { config.mtu = try list.integer("mtu", as: UInt16.self, in: 68...65535) }
        config.iommu = try list.bool("iommu") ?? false
        if let fd = nonEmpty(list["fd"]) {
            let inner = fd.hasPrefix("[") && fd.hasSuffix("]") ? String(fd.dropFirst().dropLast()) : fd
            var fds: [Int32] = []
            for item in inner.split(separator: ",", omittingEmptySubsequences: false) {
                guard let value = Int32(String(item.filter { $0 != " " })), value >= 0 else {
                    throw ConfigError(option: "--net", "fd=\(fd) is not a list of open descriptors (fd=3 or fd=[3,4])")
                }
                fds.append(value)
            }
            config.fds = fds
            config.numQueues = fds.count * 2
        }
        if nonEmpty(list["num_queues"]) != nil {
            config.numQueues = Int(try list.integer("num_queues", as: UInt16.self, in: 2...512) ?? 2)
        }
        if nonEmpty(list["queue_size"]) != nil {
            config.queueSize = try list.integer("queue_size", as: UInt16.self, in: 2...32768) ?? 256
        }
        config.id = nonEmpty(list["id"])
        config.vhostUser = try list.bool("vhost_user") ?? false
        config.vhostSocket = nonEmpty(list["socket"])
        config.pciSegment = try list.integer("pci_segment", as: UInt16.self) ?? 0
        config.pciDeviceID = try list.integer("pci_device_id", as: UInt8.self, in: 0...31)
        switch list["vhost_mode"]?.lowercased() {
        case nil, "client": config.vhostMode = .client
        case "server": config.vhostMode = .server
        case let other?: throw ConfigError(option: "--net", "vhost_mode=\(other) is not accepted; use client or server")
        }
        config.offloadTSO = try list.bool("offload_tso") ?? true
        config.offloadUFO = try list.bool("offload_ufo") ?? true
        config.offloadCsum = try list.bool("offload_csum") ?? true
        config.rateLimiterConfig = try RateLimiterConfig.parse(list, option: "--net")
        return config
    }

    private static func nonEmpty(_ value: String?) -> String? {
        guard let value, !value.isEmpty else { return nil }
        return value
    }

    /// Checks one device, as Cloud Hypervisor does, naming `--net` and the interface.
    public func validate() throws(ConfigError) {
        let name = vhostUser ? "socket=\(vhostSocket ?? "")" : tap ?? (fds.map { "fd=\($0.map(String.init).joined(separator: ","))" } ?? "a new TAP")
        if let fds, fds.contains(where: { $0 < 0 }) {
            throw ConfigError(option: "--net", "fds lists descriptors that were not passed with the request: send them as SCM_RIGHTS ancillary data on the API socket (\(name))")
        }
        guard numQueues >= 2, numQueues % 2 == 0, numQueues <= 512 else {
            throw ConfigError(option: "--net", "num_queues=\(numQueues) must be an even number from 2 to 512: one receive and one transmit queue per pair (\(name))")
        }
        guard queueSize >= 2, queueSize <= 32768, queueSize.nonzeroBitCount == 1 else {
            throw ConfigError(option: "--net", "queue_size=\(queueSize) must be a power of two from 2 to 32768 (\(name))")
        }
        if let fds {
            if tap != nil { throw ConfigError(option: "--net", "give either tap= or fd=, not both (\(name))") }
            guard fds.count * 2 == numQueues else {
                throw ConfigError(option: "--net", "fd= gives \(fds.count) descriptor(s) but num_queues=\(numQueues) needs \(numQueues / 2), one per queue pair")
            }
            if Set(fds).count != fds.count { throw ConfigError(option: "--net", "fd= lists a descriptor twice (\(name))") }
        }
        if let tap, tap.utf8.count > 15 || tap.contains("/") || tap.contains(" ") {
            throw ConfigError(option: "--net", "tap=\(tap) is not an interface name (at most 15 characters, no '/' or spaces)")
        }
        if let mac {
            guard let bytes = MACAddress(mac)?.bytes else {
                throw ConfigError(option: "--net", "mac=\(mac) is not an Ethernet address like 52:54:00:12:34:56")
            }
            if bytes[0] & 1 != 0 { throw ConfigError(option: "--net", "mac=\(mac) is a multicast address; the guest needs a unicast one") }
            if bytes.allSatisfy({ $0 == 0 }) { throw ConfigError(option: "--net", "mac=\(mac) is all zeroes") }
        }
        if let hostMac, MACAddress(hostMac) == nil {
            throw ConfigError(option: "--net", "host_mac=\(hostMac) is not an Ethernet address like 52:54:00:12:34:56")
        }
        if let ip, TapInterface.parseIPv4(ip) == nil { throw ConfigError(option: "--net", "ip=\(ip) is not an IPv4 address (\(name))") }
        if let mask {
            guard let value = TapInterface.parseIPv4(mask), value == 0 || (~value &+ 1).nonzeroBitCount == 1 else {
                throw ConfigError(option: "--net", "mask=\(mask) is not an IPv4 netmask like 255.255.255.0 (\(name))")
            }
            if ip == nil { throw ConfigError(option: "--net", "mask= needs ip= (\(name))") }
        }
        if let id, id.isEmpty { throw ConfigError(option: "--net", "id= must not be empty (\(name))") }
        try rateLimiterConfig?.validate(option: "--net")
    }
}

/// Who connects on a vhost-user socket, spelled as Cloud Hypervisor's `VhostMode`.
public enum VhostMode: String, Codable, Equatable, Sendable, CaseIterable {
    /// The VMM connects to the back-end's socket.
    case client = "Client"
    /// The VMM listens and the back-end connects.
    case server = "Server"
}
