import HostSystem
import VhostUser
import VirtioDevices

/// Reconnection to a vhost-user back-end that went away, as Cloud Hypervisor's
/// `VhostUserEpollHandler::reconnect`: when the back-end hangs up (it crashed, or was
/// restarted to upgrade it), the VMM connects again (as the client: every 100 ms for up to
/// 60 s, as its `connect_vhost_user`; with `vhost_mode=server`: it waits on its socket for
/// the back-end to come back), negotiates the same features and protocol features again and,
/// if the driver had activated the device, hands the same memory table and queues over. The
/// guest sees a pause in the device's service, nothing else.
///
/// The work runs on the device event loop: the connection's descriptor is watched for the
/// hang-up, then the retry timer or the listener for the return. The queues resume from the
/// used-ring positions the dead back-end had published (QEMU's choice when `GET_VRING_BASE`
/// cannot be asked; Cloud Hypervisor resumes from the available index, which leaves a NIC's
/// receive queue without the buffers the guest had posted, and loses requests in flight):
/// the buffers and requests the guest made available since are served once the back-end is
/// back. A request the old back-end had completed out of order, after one it had not, would
/// be served again: in-flight tracking (`INFLIGHT_SHMFD`), which settles that, is absent.
extension VhostUserCommon {
    /// The client's retry period: 100 ms, as Cloud Hypervisor's.
    static let retryIntervalNanoseconds: UInt64 = 100_000_000
    /// Retries before the client gives up: 600, 60 s as Cloud Hypervisor's `CONNECT_TIMEOUT`.
    static let retryLimit = 600

    /// Watches the connection on `events` from now on, so that a back-end that hangs up is
    /// reconnected to. A connection that is not a Unix socket (a test's replay) is not watched.
    func watch(events: EventManager) throws(SystemError) {
        try state.withLock { (state: inout State) throws(SystemError) in
            state.events = events
            try watchConnection(&state)
        }
    }

    /// Stops watching: the device is being removed. A reconnection under way ends.
    func stopWatching() {
        let (events, descriptors) = state.withLock { state -> (EventManager?, [Int32]) in
            var descriptors = [state.watched, state.retry?.rawValue].compactMap { $0 }
            if state.listening, let listener { descriptors.append(listener.rawValue) }
            defer { state.events = nil; state.watched = nil; state.retry = nil; state.listening = false }
            return (state.events, descriptors)
        }
        for descriptor in descriptors { try? events?.remove(descriptor) }
    }

    /// Stops watching and shuts the connection down: the guest ejected the device. The
    /// back-end reads the hang-up at once (a virtiofsd serving one VM exits), whoever still
    /// holds the device; the descriptors close with it.
    func disconnect() {
        stopWatching()
        let channel = state.withLock { state -> UnixVhostUserChannel? in
            defer { state.connected = false }
            return state.handedOver ? nil : state.frontend.channel as? UnixVhostUserChannel
        }
        try? channel?.socket.shutdown(.both)
    }

    /// Closes the connection for good: the VM stopped. The back-end reads the hang-up at once;
    /// with `vhost_mode=server` the listener stops answering and its socket file is removed
    /// (Cloud Hypervisor's `shutdown`), so a VM booted again listens there afresh. Nothing is
    /// closed once the connection went to a rebooted machine.
    func close() {
        disconnect()
        guard let listener, !state.withLock({ $0.handedOver }) else { return }
        try? listener.shutdown(.both)
        UnixSocket.removeSocketFile(at: socket)
    }

    /// Hands the connection to the machine an in-place reboot builds, as QEMU keeps a
    /// back-end across a guest reset: stops watching, stops the back-end's queues
    /// (`GET_VRING_BASE`), and gives the connection (and the `vhost_mode=server` listener)
    /// away; the new device negotiates over it without `SET_OWNER` and hands its own queues
    /// over when its driver is ready. While the back-end is away, or when the connection fell
    /// out of step (stopping the queues failed), only a listener is given (the new device waits
    /// on it) and the connection is shut down; with the VMM as client nothing is then given
    /// (the new device connects).
    func detach() -> KeptVhostUserConnection? {
        stopWatching()
        reset()
        let (kept, stale) = state.withLock { state -> (KeptVhostUserConnection?, UnixVhostUserChannel?) in
            guard !state.handedOver else { return (nil, nil) }
            defer { state.handedOver = true; state.connected = false }
            if state.connected, state.frontend.isInStep {
                return (KeptVhostUserConnection(frontend: state.frontend, listener: listener), nil)
            }
            return (listener.map { KeptVhostUserConnection(frontend: nil, listener: $0) }, state.frontend.channel as? UnixVhostUserChannel)
        }
        try? stale?.socket.shutdown(.both)
        return kept
    }

    /// Whether the back-end is connected (not away and being waited for).
    var isConnected: Bool { state.withLock { $0.connected } }

    private func watchConnection(_ state: inout State) throws(SystemError) {
        guard let events = state.events, let channel = state.frontend.channel as? UnixVhostUserChannel else { return }
        let descriptor = channel.socket.rawValue
        try events.add(descriptor, events: .readHangUp) { [weak self] _ in self?.backendHungUp(descriptor) }
        state.watched = descriptor
    }

    /// The connection's descriptor reported a hang-up: start reconnecting.
    private func backendHungUp(_ descriptor: Int32) {
        state.withLock { state in
            guard state.watched == descriptor, let events = state.events else { return }
            try? events.remove(descriptor)
            state.watched = nil
            state.connected = false
            state.retries = 0
            state.resumeBases = state.active.map(Self.usedIndexes)
            let plan = listener == nil ? "connecting again every 100 ms for up to 60 s" : "waiting for it to connect again (vhost_mode=server)"
            logger.warning("\(name) (\(socket)): the back-end hung up; \(plan)")
            if let listener {
                do {
                    try events.add(listener.rawValue) { [weak self] _ in self?.listenerReady() }
                    state.listening = true
                } catch {
                    logger.error("\(name) (\(socket)): cannot wait for the back-end on the listening socket: \(error); the device stays without a back-end")
                }
            } else if !connectAgain(&state) {
                do {
                    let timer = try TimerFD()
                    try timer.arm(afterNanoseconds: Self.retryIntervalNanoseconds, intervalNanoseconds: Self.retryIntervalNanoseconds)
                    try events.add(timer.rawValue) { [weak self] _ in self?.retryTick() }
                    state.retry = timer
                } catch {
                    logger.error("\(name) (\(socket)): cannot start the reconnection timer: \(error); the device stays without a back-end")
                }
            }
        }
    }

    /// One tick of the client's retry timer.
    private func retryTick() {
        state.withLock { state in
            guard let timer = state.retry, let events = state.events else { return }
            state.retries += Int(max(1, timer.expirations()))
            let done = connectAgain(&state)
            guard done || state.retries >= Self.retryLimit else { return }
            try? events.remove(timer.rawValue)
            state.retry = nil
            if !done {
                logger.error("\(name) (\(socket)): the back-end did not come back within 60 s; the device stays without a back-end (its requests wait)")
            }
        }
    }

    /// The listening socket (`vhost_mode=server`) has a connection for us.
    private func listenerReady() {
        state.withLock { state in
            guard state.listening, let listener, let events = state.events else { return }
            let socket: UnixSocket?
            do {
                socket = try listener.accept()
            } catch {
                logger.error("\(name) (\(self.socket)): accepting the back-end failed: \(error)")
                return
            }
            guard let socket, adopt(UnixVhostUserChannel(socket: socket), &state) else { return }
            try? events.remove(listener.rawValue)
            state.listening = false
        }
    }

    /// One connection attempt as the client; whether the back-end is back and in step.
    private func connectAgain(_ state: inout State) -> Bool {
        guard let socket = try? UnixSocket.connect(to: self.socket) else { return false }
        return adopt(UnixVhostUserChannel(socket: socket), &state)
    }

    /// Takes `channel` as the connection if the back-end on it negotiates what the first one
    /// did, then hands it the activated queues. A back-end that offers less is refused (its
    /// connection closed): the device keeps waiting for one that serves it.
    private func adopt(_ channel: UnixVhostUserChannel, _ state: inout State) -> Bool {
        let frontend = VhostUserFrontend(channel: channel)
        do {
            let again = try frontend.negotiate(features: negotiatedFeatures, protocolFeatures: protocolFeatures)
            guard again.features == negotiatedFeatures, again.protocolFeatures == protocolFeatures else {
                throw VirtioDeviceError.backend("it came back with features 0x\(String(again.features, radix: 16)) and protocol features "
                    + "0x\(String(again.protocolFeatures.rawValue, radix: 16)), not the 0x\(String(negotiatedFeatures, radix: 16)) and "
                    + "0x\(String(protocolFeatures.rawValue, radix: 16)) the device was built with")
            }
            state.frontend = frontend
            state.connected = true
            try handOver(&state, bases: state.resumeBases)
            state.resumeBases = nil
            try watchConnection(&state)
            // A kick the guest gave while the back-end was away may be read by the new one
            // before SET_VRING_ENABLE and dropped (a disabled ring ignores kicks): kick once
            // more, which costs the back-end one look at the available ring.
            if let notifiers = state.notifiers {
                for index in state.started {
                    try? notifiers.kick(index).signal()
                }
            }
        } catch {
            state.connected = false
            logger.error("\(name) (\(socket)): the reconnected back-end cannot serve the device: \(error)")
            return false
        }
        let served = state.started.isEmpty ? "" : " and serves \(state.started.count) queue(s) again"
        logger.info("\(name) (\(socket)): the back-end is back\(served)")
        return true
    }

    /// The used-ring index of every ready queue of `active`, by queue.
    static func usedIndexes(_ active: ActiveQueues) -> [Int: UInt16] {
        var bases: [Int: UInt16] = [:]
        for (index, queue) in active.queues.enumerated() where queue.isReady {
            if let base = try? queue.publishedUsedIndex(in: active.memory) { bases[index] = base }
        }
        return bases
    }
}
