import DeviceModel
import Foundation
import GuestMemory
import Testing
import VirtioDevices
import VirtioQueue

/// The region the tests' virtio-mem device serves: 128 MiB (64 blocks of 2 MiB) at 256 MiB.
private let base: UInt64 = 0x1000_0000
private let regionSize: UInt64 = 128 << 20
private let block: UInt64 = 2 << 20

/// A request's 24 bytes as the driver writes them.
private func request(_ type: UInt16, address: UInt64 = 0, blocks: UInt16 = 0) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: 24)
    for index in 0..<2 { bytes[index] = UInt8(truncatingIfNeeded: type >> (8 * index)) }
    for index in 0..<8 { bytes[8 + index] = UInt8(truncatingIfNeeded: address >> (8 * UInt64(index))) }
    for index in 0..<2 { bytes[16 + index] = UInt8(truncatingIfNeeded: blocks >> (8 * index)) }
    return bytes
}

@Suite struct VirtioMemTests {
    /// 1 MiB of RAM at 0 (queues and buffers) and the device's region, driven by a driver.
    func running(requested: UInt64 = 8 << 20, host: RecordingBalloonMemory = RecordingBalloonMemory(),
                 memory: GuestMemory? = nil) throws -> (StateDriver, VirtioMem) {
        let memory = try memory ?? GuestMemory.anonymous([(GuestAddress(0), 0x10_0000), (GuestAddress(base), regionSize)], options: [.noReserve])
        let device = try VirtioMem(address: base, size: regionSize, requested: requested, host: host)
        let guest = try StateDriver(device: device, memory: memory)
        guest.bringUp(features: VirtioFeature.version1, queues: [0])
        return (guest, device)
    }

    /// Sends one request and returns (response type, state) as the device wrote them, or nil
    /// when the chain came back unanswered.
    @discardableResult
    func send(_ guest: StateDriver, _ bytes: [UInt8], requestLength: Int = 24, statusLength: Int = 10,
              statusWritable: Bool = true) throws -> (UInt16, UInt16)? {
        let status = try guest.buffer([UInt8](repeating: 0xEE, count: 16))
        try guest.post(0, [(try guest.buffer(bytes), requestLength, false), (status, statusLength, statusWritable)])
        guest.notify(0)
        let used = try guest.used(0)
        guard let last = used.entries.last, last.1 == 10 else { return nil }
        return (try guest.memory.read(UInt16.self, at: GuestAddress(status)), try guest.memory.read(UInt16.self, at: GuestAddress(status + 8)))
    }

    @Test func typeQueueFeaturesAndConfigurationSpace() throws {
        let device = try VirtioMem(address: base, size: regionSize, requested: 64 << 20, host: RecordingBalloonMemory())
        #expect(device.deviceType.rawValue == 24 && device.deviceType.description == "mem")
        #expect(device.queueMaxSizes == [128] && device.features == VirtioFeature.version1)
        let read = { (offset: UInt64, size: Int) in device.readConfig(offset: offset, size: size) }
        #expect(read(0, 8) == block && read(8, 2) == 0 && read(16, 8) == base && read(24, 8) == regionSize)
        #expect(read(32, 8) == regionSize && read(40, 8) == 0 && read(48, 8) == 64 << 20 && read(56, 4) == 0)
        #expect(read(18, 2) == 0x1000 && read(52, 4) == 0)
        // The configuration space is read-only.
        device.writeConfig(offset: 48, size: 8, value: 0)
        #expect(read(48, 8) == 64 << 20)
        let numa = try VirtioMem(address: base, size: regionSize, nodeID: 3, host: RecordingBalloonMemory())
        #expect(numa.features == VirtioFeature.version1 | 1 && numa.readConfig(offset: 8, size: 2) == 3)
    }

    @Test func makingRefusesWhatCloudHypervisorRefuses() {
        #expect { try VirtioMem(address: base, size: 64 << 20) } throws: { "\($0)".contains("not aligned with 134217728") }
        #expect { try VirtioMem(address: base + 4096, size: regionSize) } throws: { "\($0)".contains("addr 0x10001000 is not aligned on block_size") }
        #expect { try VirtioMem(address: base, size: regionSize, requested: 256 << 20) } throws: { "\($0)".contains("bigger than region_size") }
        #expect { try VirtioMem(address: base, size: regionSize, requested: 3 << 20) } throws: { "\($0)".contains("not aligned on block_size") }
    }

    @Test func resizeRulesAndTheConfigInterrupt() throws {
        let (guest, device) = try running(requested: 0)
        try device.resize(to: 32 << 20)
        #expect(device.configuration.requestedSize == 32 << 20 && guest.routing.deliveries == [0])
        #expect { try device.resize(to: 32 << 20) } throws: { "\($0)".contains("identical") }
        #expect { try device.resize(to: regionSize + block) } throws: { "\($0)".contains("bigger than region_size") }
        #expect { try device.resize(to: 33 << 20) } throws: { "\($0)".contains("not aligned on block_size") }
        #expect(device.configuration.requestedSize == 32 << 20 && guest.routing.deliveries == [0])
        try device.resize(to: 0)
        #expect(device.configuration.requestedSize == 0 && guest.routing.deliveries == [0, 0])
    }

    @Test func plugUnplugAndStateTrackTheBitmap() throws {
        let host = RecordingBalloonMemory()
        let (guest, device) = try running(requested: 8 << 20, host: host)
        // Nothing was plugged yet: activation has nothing to give back.
        #expect(host.released.isEmpty)
        #expect(try send(guest, request(0, address: base + block, blocks: 3))! == (0, 0))
        #expect(device.pluggedSize == 6 << 20 && device.pluggedBlocks.prefix(5) == [false, true, true, true, false])
        #expect(device.readConfig(offset: 40, size: 8) == 6 << 20)
        #expect(guest.routing.deliveries == [1])
        // STATE: plugged, unplugged, mixed.
        #expect(try send(guest, request(3, address: base + block, blocks: 3))! == (0, 0))
        #expect(try send(guest, request(3, address: base + 4 * block, blocks: 10))! == (0, 1))
        #expect(try send(guest, request(3, address: base, blocks: 2))! == (0, 2))
        // Plugging past requested_size is NACK; unplugging returns the blocks to the host.
        #expect(try send(guest, request(0, address: base + 10 * block, blocks: 2))! == (1, 0))
        #expect(try send(guest, request(1, address: base + 2 * block, blocks: 2))! == (0, 0))
        #expect(host.released.last == [base + 2 * block, 2 * block])
        #expect(device.pluggedSize == block && device.pluggedBlocks.prefix(4) == [false, true, false, false])
        // UNPLUG_ALL gives back the whole region.
        #expect(try send(guest, request(2))! == (0, 0))
        #expect(device.pluggedSize == 0 && !device.pluggedBlocks.contains(true) && host.released.last == [base, regionSize])
    }

    @Test func hostileRequestsGetCloudHypervisorsAnswers() throws {
        let (guest, device) = try running(requested: regionSize)
        // Outside the region, misaligned, empty, overflowing, past its end: ERROR.
        #expect(try send(guest, request(0, address: base - block, blocks: 1))! == (3, 0))
        #expect(try send(guest, request(0, address: base + 4096, blocks: 1))! == (3, 0))
        #expect(try send(guest, request(0, address: base, blocks: 0))! == (3, 0))
        #expect(try send(guest, request(3, address: UInt64.max - block + 1, blocks: 2))! == (3, 0))
        #expect(try send(guest, request(3, address: base + regionSize - block, blocks: 2))! == (3, 0))
        // Unplugging unplugged blocks, plugging plugged ones, an unknown type: ERROR.
        #expect(try send(guest, request(1, address: base, blocks: 1))! == (3, 0))
        #expect(try send(guest, request(0, address: base, blocks: 1))! == (0, 0))
        #expect(try send(guest, request(0, address: base, blocks: 2))! == (3, 0))
        #expect(device.pluggedSize == block)
        let (other, _) = try running()
        #expect(try send(other, request(9, address: base, blocks: 1))! == (3, 0))
        // Malformed chains come back unanswered (used length 0) and change nothing.
        #expect(try send(other, request(0, address: base, blocks: 1), requestLength: 16) == nil)
        #expect(try send(other, request(0, address: base, blocks: 1), statusLength: 8) == nil)
        #expect(try send(other, request(0, address: base, blocks: 1), statusWritable: false) == nil)
        #expect(try other.used(0).entries.suffix(3).map(\.1) == [0, 0, 0])
    }

    @Test func unpluggedBlocksReadZerosOnTheRealHost() throws {
        let memory = try GuestMemory.anonymous([(GuestAddress(0), 0x10_0000), (GuestAddress(base), regionSize)], options: [.noReserve])
        let device = try VirtioMem(address: base, size: regionSize, requested: 4 << 20)
        let guest = try StateDriver(device: device, memory: memory)
        guest.bringUp(features: VirtioFeature.version1, queues: [0])
        #expect(try send(guest, request(0, address: base, blocks: 2))! == (0, 0))
        try memory.fill(0xAB, count: 8192, at: GuestAddress(base + block))
        try memory.fill(0xCD, count: 4096, at: GuestAddress(base))
        #expect(try send(guest, request(1, address: base + block, blocks: 1))! == (0, 0))
        #expect(try memory.readBytes(count: 8192, at: GuestAddress(base + block)).allSatisfy { $0 == 0 })
        #expect(try memory.readBytes(count: 4096, at: GuestAddress(base)).allSatisfy { $0 == 0xCD })
    }

    /// The transport activates a running device before restoring its state (and a device the
    /// driver had not started is restored, then activated later): either way the plugged
    /// blocks keep the snapshot's bytes and only the unplugged ones go back to the host.
    @Test func restoreKeepsPluggedBytesWhicheverComesFirst() throws {
        let (source, device) = try running(requested: 8 << 20)
        #expect(try send(source, request(0, address: base + 4 * block, blocks: 2))! == (0, 0))
        let state = device.saveDeviceState().state
        for activateFirst in [true, false] {
            // The restored machine's memory, with the snapshot's bytes in a plugged and an unplugged block.
            let memory = try GuestMemory.anonymous([(GuestAddress(0), 0x10_0000), (GuestAddress(base), regionSize)], options: [.noReserve])
            try memory.fill(0x5A, count: 4096, at: GuestAddress(base + 4 * block))
            try memory.fill(0x77, count: 4096, at: GuestAddress(base + 7 * block))
            let copy = try VirtioMem(address: base, size: regionSize)
            let guest = try StateDriver(device: copy, memory: memory)
            if activateFirst {
                guest.bringUp(features: VirtioFeature.version1, queues: [0])
                try copy.restoreDeviceState(state)
            } else {
                try copy.restoreDeviceState(state)
                #expect(try memory.readBytes(count: 4096, at: GuestAddress(base + 7 * block)).allSatisfy { $0 == 0x77 })
                guest.bringUp(features: VirtioFeature.version1, queues: [0])
            }
            #expect(try memory.readBytes(count: 4096, at: GuestAddress(base + 4 * block)).allSatisfy { $0 == 0x5A })
            #expect(try memory.readBytes(count: 4096, at: GuestAddress(base + 7 * block)).allSatisfy { $0 == 0 })
            #expect(copy.pluggedBlocks == device.pluggedBlocks)
        }
    }

    @Test func stateRoundTripsAndForeignStatesAreRefused() throws {
        let (guest, device) = try running(requested: 8 << 20)
        #expect(try send(guest, request(0, address: base + 4 * block, blocks: 2))! == (0, 0))
        let saved = device.saveDeviceState()
        let data = try JSONEncoder().encode(saved.state)
        let state = try JSONDecoder().decode(VirtioDeviceState.self, from: data)
        let copy = try VirtioMem(address: base, size: regionSize, host: RecordingBalloonMemory())
        try copy.restoreDeviceState(state)
        #expect(copy.pluggedBlocks == device.pluggedBlocks && copy.configuration == device.configuration)
        #expect(saved.queues.keys.sorted() == [0])
        // Another region, a bitmap that disagrees with plugged_size, another device's state.
        let elsewhere = try VirtioMem(address: base + regionSize, size: regionSize, host: RecordingBalloonMemory())
        #expect { try elsewhere.restoreDeviceState(state) } throws: { "\($0)".contains("does not match") }
        guard case .mem(var forged) = state else { Issue.record("not a mem state"); return }
        forged.plugged[0] = true
        #expect { try copy.restoreDeviceState(.mem(forged)) } throws: { "\($0)".contains("does not match") }
        #expect(throws: DeviceStateError.self) { try copy.restoreDeviceState(.rng) }
    }
}
