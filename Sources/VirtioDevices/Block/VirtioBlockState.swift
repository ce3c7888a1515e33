import DeviceModel
import RateLimiter
import Synchronization
import VirtioQueue

extension VirtioBlock {
    /// A block device's own state (its queues are saved by the transport).
    public struct State: Codable, Equatable, Sendable {
        /// The features the driver accepted.
        public var features: UInt64
        /// Whether the cache is in write-back mode (the config space's `writeback` byte).
        public var writeback: Bool
        /// The request counters.
        public var counters: Counters
        /// The rate limiter's buckets (`nil` without a rate limiter).
        public var rateLimiter: RateLimiter.State?

        /// A state with every field given.
        public init(features: UInt64, writeback: Bool, counters: Counters, rateLimiter: RateLimiter.State?) {
            self.features = features
            self.writeback = writeback
            self.counters = counters
            self.rateLimiter = rateLimiter
        }
    }

    /// The state and the running queues, every queue lock held (in index order) and then
    /// the device's, so no request is half-counted.
    public func saveDeviceState() -> VirtioDeviceSnapshot {
        // A request in flight would be lost: its chain is popped but not yet used.
        drain()
        let boxes = core.withLock { $0.running?.queues ?? [] }
        var queues: [Int: SplitQueueState] = [:]
        return Self.withQueuesLocked(boxes[...], into: &queues) { queues in
            let state = core.withLock { core in
                State(features: core.negotiated, writeback: core.writeback != 0, counters: core.counters,
                      rateLimiter: options.rateLimiter?.saveState())
            }
            return VirtioDeviceSnapshot(state: .block(state), queues: queues)
        }
    }

    /// Holds each queue's lock in turn while recording its state, then runs `body`.
    private static func withQueuesLocked(_ boxes: ArraySlice<QueueBox>, into queues: inout [Int: SplitQueueState],
                                         _ body: ([Int: SplitQueueState]) -> VirtioDeviceSnapshot) -> VirtioDeviceSnapshot {
        guard let first = boxes.first else { return body(queues) }
        return first.work.withLock { work in
            queues[boxes.startIndex] = work.queue.state
            return withQueuesLocked(boxes.dropFirst(), into: &queues, body)
        }
    }

    /// Takes the negotiated features, cache mode, counters and rate limiter state.
    ///
    /// - Throws: `DeviceStateError` for a state of another device type, feature bits this
    ///   device does not offer, or a rate limiter state that does not fit its limiter (or
    ///   present on one side only).
    public func restoreDeviceState(_ state: VirtioDeviceState) throws(DeviceStateError) {
        guard case .block(let saved) = state else { throw wrongKind(state) }
        func refuse(_ reason: String) -> DeviceStateError { DeviceStateError(device: "virtio-block", reason: reason) }
        let extra = saved.features & ~(features | VirtioFeature.transportOffered)
        guard extra == 0 else {
            throw refuse("features: bits 0x\(String(extra, radix: 16)) were not offered by this device")
        }
        switch (options.rateLimiter, saved.rateLimiter) {
        case (nil, nil): break
        case (nil, .some): throw refuse("rateLimiter: saved with a rate limiter, but this device has none")
        case (.some, nil): throw refuse("rateLimiter: saved without a rate limiter, but this device has one")
        case (.some(let limiter), .some(let limiterState)):
            do { try limiter.restoreState(limiterState) } catch { throw refuse("rateLimiter: \(error)") }
        }
        core.withLock { core in
            core.negotiated = saved.features
            core.running?.features = saved.features
            core.writeback = saved.writeback ? 1 : 0
            core.counters = saved.counters
        }
    }
}
