// fuzz-virtio-vsock: VirtioVsock driven by DeviceHarness: fuzzed queues and chains (mutated
// vsock packets) on its receive, transmit and event queues, interleaved with host actions:
// clients connecting to the hybrid socket with fuzzed CONNECT lines, host streams that
// send, end, fail, refuse writes or hang up, and readiness reported for any descriptor.
import FuzzSupport
import GuestMemory
import Synchronization
import VirtioDevices

/// An in-memory host stream whose behaviour the input decides.
final class FuzzStream: VsockHostStream {
    struct State {
        var inbound: [UInt8] = []
        var endOfStream = false
        var failing = false
        var writeRoom = Int.max
        var written = 0
    }

    let pollDescriptor: Int32
    let state = Mutex(State())

    init(descriptor: Int32) { pollDescriptor = descriptor }

    func read(maxCount: Int) -> (VsockIOResult, [UInt8]) {
        fuzzCheck(maxCount > 0 && maxCount <= 1 << 16, "a read of \(maxCount) bytes")
        return state.withLock { state in
            if state.failing { return (.failed("fuzzed"), []) }
            if state.inbound.isEmpty { return (state.endOfStream ? .endOfStream : .wouldBlock, []) }
            let bytes = Array(state.inbound.prefix(maxCount))
            state.inbound.removeFirst(bytes.count)
            return (.bytes(bytes.count), bytes)
        }
    }

    func write(_ bytes: ArraySlice<UInt8>) -> VsockIOResult {
        state.withLock { state in
            if state.failing { return .failed("fuzzed") }
            let count = min(bytes.count, state.writeRoom)
            if count == 0 { return .wouldBlock }
            state.writeRoom -= count
            state.written += count
            return .bytes(count)
        }
    }

    func shutdownWrite() {}
}

/// Host listeners on some ports; clients the input makes wait to be accepted.
final class FuzzBackend: VsockHostBackend {
    let listenerDescriptor: Int32 = 3
    let state = Mutex<(pending: [FuzzStream], all: [FuzzStream], next: Int32)>(([], [], 10))

    func make() -> FuzzStream {
        state.withLock { state in
            let stream = FuzzStream(descriptor: state.next)
            state.next += 1
            if state.all.count < 64 { state.all.append(stream) }
            return stream
        }
    }

    func accept() -> (any VsockHostStream)? {
        state.withLock { state in state.pending.isEmpty ? nil : state.pending.removeFirst() }
    }

    func connect(port: UInt32) throws(VirtioDeviceError) -> any VsockHostStream {
        guard port % 3 != 0 else { throw .backend("nobody listens") }
        return make()
    }
}

/// Checks that the device never watches a descriptor it did not get.
final class FuzzWatcher: VsockEventWatcher {
    let watched = Mutex<Set<Int32>>([])
    func watch(_ descriptor: Int32, interest: VsockInterest) {
        fuzzCheck(!interest.isEmpty, "watching descriptor \(descriptor) for nothing")
        watched.withLock { _ = $0.insert(descriptor) }
    }
    func unwatch(_ descriptor: Int32) { watched.withLock { _ = $0.remove(descriptor) } }
}

@main
enum VirtioVsockFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        let choice = input.byte()
        let backend = FuzzBackend()
        let clock = Mutex<UInt64>(0)
        let device = VirtioVsock(cid: 3, backend: backend, watcher: FuzzWatcher(), queueSize: [256, 16, 1, 64][Int(choice & 3)],
                                 clock: { clock.withLock { $0 } })
        var harness = DeviceHarness(device: device, &input)
        harness.run(&input) { action, input in
            switch action & 7 {
            case 0:
                let client = backend.make()
                client.state.withLock { $0.inbound = input.run(maxCount: 40) }
                backend.state.withLock { $0.pending.append(client) }
                device.hostReady(descriptor: 3, events: .readable)
            case 1, 2:
                let streams = backend.state.withLock { $0.all }
                guard !streams.isEmpty else { return }
                let stream = streams[input.int(in: 0...(streams.count - 1))]
                let bytes = input.run(maxCount: 600)
                stream.state.withLock { state in
                    state.inbound += bytes
                    if action & 8 != 0 { state.endOfStream = true }
                    if action & 16 != 0 { state.failing = true }
                    state.writeRoom = action & 4 != 0 ? 0 : Int.max
                }
                device.hostReady(descriptor: stream.pollDescriptor, events: VsockInterest(rawValue: input.byte() & 7))
            case 3:
                device.hostReady(descriptor: Int32(input.byte()), events: VsockInterest(rawValue: input.byte() & 7))
            case 4:
                clock.withLock { $0 += UInt64(input.byte()) * 100 }
            case 5:
                // A packet (or anything) laid in the data area, for chains to point at: the
                // harness's own chain payloads are too short for a 44-byte header.
                let offset = UInt64(input.integer(UInt16.self))
                let bytes = input.run(maxCount: 600)
                try? FuzzGuest.memory.write(bytes: bytes, at: GuestAddress(FuzzGuest.dataArea.lowerBound + offset))
            default:
                _ = device.saveDeviceState()
            }
            fuzzCheck(device.connections.count <= Vsock.maxConnections, "more connections than the limit")
        }
        device.close()
    }
}

/// A guest REQUEST and data on the transmit queue, receive buffers, a host CONNECT line.
private func seeds() -> [[UInt8]] {
    typealias Buffer = FuzzInputBuilder.SeedBuffer
    let request = VsockHeader(sourceCID: 3, destinationCID: 2, sourcePort: 1234, destinationPort: 5000, op: .request,
                              bufferAllocation: 65536)
    let data = VsockHeader(sourceCID: 3, destinationCID: 2, sourcePort: 1234, destinationPort: 5000, length: 5, op: .readWrite,
                           bufferAllocation: 65536)
    /// Lays `bytes` at `offset` in the data area (the target's action 0xe5).
    func lay(_ builder: inout FuzzInputBuilder, _ offset: UInt16, _ bytes: [UInt8]) {
        builder.byte(0xe5)
        builder.integer(offset)
        builder.run(bytes, maxCount: 600)
    }
    var guest = FuzzInputBuilder()
    guest.byte(0)
    guest.deviceStart(queues: 3)
    lay(&guest, 0, request.encoded)
    lay(&guest, 0x100, data.encoded + Array("hello".utf8))
    guest.deviceChain(queue: 0, head: 0, [Buffer(offset: 0x800, length: 44 + 256, writable: true)])
    guest.deviceChain(queue: 0, head: 1, [Buffer(offset: 0xa00, length: 44, writable: true),
                                          Buffer(offset: 0xc00, length: 128, writable: true)])
    guest.deviceChain(queue: 1, head: 0, [Buffer(offset: 0, length: 44, writable: false)])
    guest.deviceChain(queue: 1, head: 1, [Buffer(offset: 0x100, length: 49, writable: false)])
    guest.deviceNotify(queue: 1)
    guest.byte(0xe1)
    guest.byte(0)
    guest.run(Array("host bytes".utf8), maxCount: 600)
    guest.byte(1)
    guest.deviceNotify(queue: 0)
    var host = FuzzInputBuilder()
    host.byte(0)
    host.deviceStart(queues: 3)
    host.deviceChain(queue: 0, head: 0, [Buffer(offset: 0x800, length: 44 + 64, writable: true)])
    host.byte(0xe0)
    host.run(Array("CONNECT 52\nafter".utf8), maxCount: 40)
    for _ in 0..<3 {
        host.byte(0xe3)
        host.append([10, 1])
    }
    let response = VsockHeader(sourceCID: 3, destinationCID: 2, sourcePort: 52, destinationPort: 1 << 30, op: .response,
                               bufferAllocation: 65536)
    lay(&host, 0, response.encoded)
    host.deviceChain(queue: 1, head: 0, [Buffer(offset: 0, length: 44, writable: false)])
    host.deviceNotify(queue: 1)
    return [guest.bytes, host.bytes]
}
