import GuestMemory
import Synchronization
import VirtioDevices
import VirtioQueue

/// Counts the interrupts a device raises (nothing else happens with them).
public final class CountingInterrupt: VirtioInterrupt {
    private let counts = Mutex<(queue: Int, config: Int)>((0, 0))
    /// Creates a counter at zero.
    public init() {}
    /// Counts a used-buffer interrupt.
    public func signalQueue(_ queue: Int) { counts.withLock { $0.queue += 1 } }
    /// Counts a configuration-change interrupt.
    public func signalConfig() { counts.withLock { $0.config += 1 } }
}

/// Drives any `VirtioDevice` as a fuzzed driver would, without a transport: programs its
/// queues in ``FuzzGuest/memory``, activates it, then runs decoded actions (chains,
/// notifications, configuration accesses, resets) until the input runs out.
///
/// Errors are expected and ignored: a device must refuse a broken driver, never crash.
public struct DeviceHarness {
    /// The device under test.
    public let device: any VirtioDevice
    private var queues: [GuestQueue] = []
    private let interrupt = CountingInterrupt()

    /// Clears guest memory, negotiates fuzzed features and activates `device`.
    public init(device: any VirtioDevice, _ input: inout FuzzInput) {
        self.device = device
        FuzzGuest.clear()
        start(&input)
    }

    /// Feature negotiation and activation, as after a reset.
    private mutating func start(_ input: inout FuzzInput) {
        device.acknowledgeFeatures((device.features | VirtioFeature.version1) & input.integer(UInt64.self))
        queues = device.queueMaxSizes.enumerated().map { GuestQueue(&input, index: $0.offset, maxSize: $0.element) }
        try? device.activate(memory: FuzzGuest.memory, queues: queues.map(\.queue), interrupt: interrupt)
    }

    /// Runs actions until `input` is exhausted. Action bytes 0xe0 and above go to `special`
    /// (device-specific host actions, such as console input), when given.
    public mutating func run(_ input: inout FuzzInput, special: ((UInt8, inout FuzzInput) -> Void)? = nil) {
        while !input.isExhausted {
            let action = input.byte()
            if action >= 0xe0, let special {
                special(action, &input)
                continue
            }
            switch action % 8 {
            case 0, 1, 2:
                let index = Int(input.byte()) % queues.count
                queues[index].act(&input)
            case 3, 4:
                try? device.processQueue(input.int(in: -1...queues.count))
            case 5:
                _ = device.readConfig(offset: UInt64(input.byte()), size: input.pick([1, 2, 4, 8]))
            case 6:
                device.writeConfig(offset: UInt64(input.byte()), size: input.pick([1, 2, 4, 8]), value: input.integer(UInt64.self))
            default:
                device.reset()
                start(&input)
            }
        }
    }
}
