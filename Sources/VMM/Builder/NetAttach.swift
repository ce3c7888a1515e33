import HostSystem
import Logging
import VMAllocator
import VirtioDevices

/// A virtio-net device with the TAP interface behind it.
struct AttachedNet {
    let id: String
    let device: VirtioNet
    let tap: TapInterface
    let attachment: VirtioPCIAttachment
    let address: String
}

extension VMBuilder {
    /// Attaches one virtio-net device (`--net ...`): opens or creates the TAP interface (or
    /// adopts `fd=`), configures its host side as Cloud Hypervisor does, and serves each
    /// queue pair's TAP queue from the event loop. The TAP descriptors are watched
    /// edge-triggered: the device drains a queue while the guest has receive buffers, and
    /// pulls what is left when the driver posts more (its receive-queue notification).
    func attachVirtioNet(_ config: NetConfig, id: String, context: VirtioAttachContext,
                         bars: inout BARWindows) throws -> AttachedNet {
        let tap = try openTap(config)
        let backends = tap.queues.map { TapNetBackend(interface: tap.name, queue: $0) }
        let mac = config.mac.flatMap(MACAddress.init) ?? MACAddress.random()
        // Receive and transmit are throttled separately, with the same settings (as Cloud Hypervisor).
        let receiveLimiter = config.rateLimiterConfig?.makeLimiter(), transmitLimiter = config.rateLimiterConfig?.makeLimiter()
        let options = VirtioNet.Options(mac: mac, mtu: config.mtu, queueSize: config.queueSize,
                                        offloadChecksum: config.offloadCsum, offloadTSO: config.offloadTSO,
                                        offloadUFO: config.offloadUFO,
                                        receiveRateLimiter: receiveLimiter, transmitRateLimiter: transmitLimiter)
        let device = try VirtioNet(backends: backends, options: options)
        let (attachment, address) = try attachVirtio(device, id: id, context: context, bars: &bars, slot: config.pciDeviceID, behindIOMMU: config.iommu)
        // A transmit queue the guest refilled during a round is served again after the other
        // events waiting (the TAP's acknowledgements first): its kick eventfd is signalled.
        let kicks = try (0..<backends.count).map { try attachment.kickEvent(queue: VirtioNet.transmitQueueIndex(pair: $0)) }
        device.serveTransmitLater { queue in try? kicks[queue / 2].signal() }
        if let receiveLimiter, let transmitLimiter, !receiveLimiter.isUnlimited {
            let transport = attachment.transport, pairs = backends.count
            try RateLimiterWakeUp.install(receiveLimiter, events: context.events) {
                for pair in 0..<pairs { _ = device.backendReadable(pair: pair) }
            }
            try RateLimiterWakeUp.install(transmitLimiter, events: context.events) {
                for pair in 0..<pairs { transport.notifyQueue(VirtioNet.transmitQueueIndex(pair: pair)) }
            }
            logger.info("\(id): rate limited each way (\(Self.describe(receiveLimiter)))")
        }
        for (pair, backend) in backends.enumerated() {
            try context.events.add(backend.queue.rawValue, events: [.readable, .edgeTriggered]) { _ in
                device.backendReadable(pair: pair)
            }
        }
        logger.info("\(id): \(tap.name), guest MAC \(mac), \(backends.count) queue pair(s) of \(config.queueSize)\(config.fds != nil ? ", handed-over fd" : "")")
        return AttachedNet(id: id, device: device, tap: tap, attachment: attachment, address: address)
    }

    /// The TAP interface of `config`, with the host-side settings applied: `host_mac=`,
    /// `mtu=`, `ip=`/`mask=` and the link brought up. A handed-over TAP (`fd=`) is left as
    /// its owner configured it.
    func openTap(_ config: NetConfig) throws(TapError) -> TapInterface {
        if let fds = config.fds { return try TapInterface.adopt(fds) }
        let tap = try TapInterface.open(name: config.tap, queueCount: config.numQueues / 2)
        try tap.configureHostSide(mac: config.hostMac.flatMap(MACAddress.init)?.bytes, mtu: config.mtu.map(Int.init),
                                  ipv4: config.ip, netmask: config.mask)
        return tap
    }
}
