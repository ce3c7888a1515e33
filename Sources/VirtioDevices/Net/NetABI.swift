/// virtio-net's constants (virtio 1.x, section 5.1): feature bits, the packet header, the
/// configuration layout and the control-queue commands.
public enum VirtioNetABI {
    /// The bytes of `struct virtio_net_hdr_v1` in front of every frame (virtio 1.x always
    /// uses this size, with or without mergeable receive buffers).
    public static let headerSize = 12
    /// The byte offset of `num_buffers` (le16) in the header.
    public static let numBuffersOffset = 10
    /// The largest Ethernet frame the device moves (65550 bytes): room for a 64 KiB
    /// segmentation-offload packet and its link-layer headers.
    public static let maxFrameSize = 65550
    /// The largest packet (header and frame) crossing the device: 65562 bytes.
    public static let maxPacketSize = headerSize + maxFrameSize
    /// The smallest MTU the configuration may advertise (IPv4's minimum).
    public static let minimumMTU: UInt16 = 68
    /// `VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX`: the most queue pairs a device may have.
    public static let maxQueuePairs = 0x8000

    /// Feature bits.
    public enum Feature {
        /// `VIRTIO_NET_F_CSUM`: the device takes packets with a partial checksum.
        public static let checksum: UInt64 = 1 << 0
        /// `VIRTIO_NET_F_GUEST_CSUM`: the driver takes packets with a partial checksum.
        public static let guestChecksum: UInt64 = 1 << 1
        /// `VIRTIO_NET_F_CTRL_GUEST_OFFLOADS`: the driver may switch guest offloads at run time.
        public static let controlGuestOffloads: UInt64 = 1 << 2
        /// `VIRTIO_NET_F_MTU`: `mtu` in the configuration is valid.
        public static let mtu: UInt64 = 1 << 3
        /// `VIRTIO_NET_F_MAC`: `mac` in the configuration is valid.
        public static let mac: UInt64 = 1 << 5
        /// `VIRTIO_NET_F_GUEST_TSO4`: the driver takes TCP/IPv4 segmentation offload.
        public static let guestTSO4: UInt64 = 1 << 7
        /// `VIRTIO_NET_F_GUEST_TSO6`: the driver takes TCP/IPv6 segmentation offload.
        public static let guestTSO6: UInt64 = 1 << 8
        /// `VIRTIO_NET_F_GUEST_ECN`: the driver takes segmentation offload with ECN.
        public static let guestECN: UInt64 = 1 << 9
        /// `VIRTIO_NET_F_GUEST_UFO`: the driver takes UDP fragmentation offload.
        public static let guestUFO: UInt64 = 1 << 10
        /// `VIRTIO_NET_F_HOST_TSO4`: the device takes TCP/IPv4 segmentation offload.
        public static let hostTSO4: UInt64 = 1 << 11
        /// `VIRTIO_NET_F_HOST_TSO6`: the device takes TCP/IPv6 segmentation offload.
        public static let hostTSO6: UInt64 = 1 << 12
        /// `VIRTIO_NET_F_HOST_ECN`: the device takes segmentation offload with ECN.
        public static let hostECN: UInt64 = 1 << 13
        /// `VIRTIO_NET_F_HOST_UFO`: the device takes UDP fragmentation offload.
        public static let hostUFO: UInt64 = 1 << 14
        /// `VIRTIO_NET_F_MRG_RXBUF`: a received packet may span several receive chains.
        public static let mergeableReceiveBuffers: UInt64 = 1 << 15
        /// `VIRTIO_NET_F_STATUS`: `status` in the configuration is valid.
        public static let status: UInt64 = 1 << 16
        /// `VIRTIO_NET_F_CTRL_VQ`: the device has a control queue.
        public static let controlQueue: UInt64 = 1 << 17
        /// `VIRTIO_NET_F_CTRL_RX`: receive filtering commands (not offered).
        public static let controlReceive: UInt64 = 1 << 18
        /// `VIRTIO_NET_F_CTRL_VLAN`: VLAN filtering commands (not offered).
        public static let controlVLAN: UInt64 = 1 << 19
        /// `VIRTIO_NET_F_GUEST_ANNOUNCE`: the driver sends gratuitous packets on request (not offered).
        public static let guestAnnounce: UInt64 = 1 << 21
        /// `VIRTIO_NET_F_MQ`: several queue pairs, steered with `VQ_PAIRS_SET`.
        public static let multiQueue: UInt64 = 1 << 22
        /// `VIRTIO_NET_F_CTRL_MAC_ADDR`: the driver sets the MAC address through the control queue (not offered).
        public static let controlMACAddress: UInt64 = 1 << 23

        /// The receive offloads a driver accepts, which the backend must know about.
        public static let guestOffloads: UInt64 = guestChecksum | guestTSO4 | guestTSO6 | guestECN | guestUFO
    }

    /// `VIRTIO_NET_S_LINK_UP`: the link is up (the `status` field).
    public static let statusLinkUp: UInt16 = 1

    /// Byte offsets of the fields of `struct virtio_net_config`.
    public enum ConfigOffset {
        /// `mac` (6 bytes).
        public static let mac: UInt64 = 0
        /// `status` (le16).
        public static let status: UInt64 = 6
        /// `max_virtqueue_pairs` (le16).
        public static let maxVirtqueuePairs: UInt64 = 8
        /// `mtu` (le16).
        public static let mtu: UInt64 = 10
        /// The bytes of the structure this device presents.
        public static let length: UInt64 = 12
    }

    /// Control-queue command classes (`VIRTIO_NET_CTRL_*`).
    public enum ControlClass: UInt8, Sendable {
        /// `VIRTIO_NET_CTRL_RX`: promiscuous, all-multicast and similar receive modes.
        case receiveMode = 0
        /// `VIRTIO_NET_CTRL_MAC`: the MAC filter table and the MAC address.
        case mac = 1
        /// `VIRTIO_NET_CTRL_VLAN`: VLAN filtering (refused: not offered).
        case vlan = 2
        /// `VIRTIO_NET_CTRL_ANNOUNCE`: acknowledging a link announcement (refused: not offered).
        case announce = 3
        /// `VIRTIO_NET_CTRL_MQ`: the number of queue pairs in use.
        case multiQueue = 4
        /// `VIRTIO_NET_CTRL_GUEST_OFFLOADS`: the receive offloads in use.
        case guestOffloads = 5
    }

    /// The commands of ``ControlClass/receiveMode`` (`VIRTIO_NET_CTRL_RX_*`): promisc
    /// (0), allmulti (1), alluni (2), nomulti (3), nouni (4), nobcast (5); each with a one-byte on/off argument.
    public static let receiveModeCommands: ClosedRange<UInt8> = 0...5
    /// `VIRTIO_NET_CTRL_MAC_TABLE_SET`: the unicast and multicast filter tables.
    public static let macTableSet: UInt8 = 0
    /// `VIRTIO_NET_CTRL_MAC_ADDR_SET`: the device's MAC address.
    public static let macAddressSet: UInt8 = 1
    /// `VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET`: the number of queue pairs to use (le16).
    public static let queuePairsSet: UInt8 = 0
    /// `VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET`: the receive offloads to use (le64 of feature bits).
    public static let guestOffloadsSet: UInt8 = 0

    /// The acknowledgement byte of a control command.
    public enum Ack: UInt8, Sendable {
        /// `VIRTIO_NET_OK`.
        case ok = 0
        /// `VIRTIO_NET_ERR`.
        case error = 1
    }

    /// The backend offloads (`TUN_F_*`) that the guest offload feature bits in `features` allow.
    public static func offloads(forGuestFeatures features: UInt64) -> NetOffloads {
        var offloads: NetOffloads = []
        if features & Feature.guestChecksum != 0 { offloads.insert(.checksum) }
        if features & Feature.guestTSO4 != 0 { offloads.insert(.tso4) }
        if features & Feature.guestTSO6 != 0 { offloads.insert(.tso6) }
        if features & Feature.guestECN != 0 { offloads.insert(.tsoECN) }
        if features & Feature.guestUFO != 0 { offloads.insert(.ufo) }
        return offloads
    }
}
