import DeviceModel
import PCI
import Testing
import TestSupport

/// The registers no guest write may change: identity, class, header type, subsystem,
/// capability pointer and interrupt pin.
private struct Identity: Equatable {
    var words: [UInt32]
    var headerType: UInt32
    var capabilityPointer: UInt32
    var interruptPin: UInt32
    var capabilities: [UInt32]

    init(read: (Int, Int) -> UInt32) {
        words = [0x00, 0x08, 0x2c].map { read($0, 4) }
        headerType = read(0x0e, 1)
        capabilityPointer = read(0x34, 1)
        interruptPin = read(0x3d, 1)
        // Walk the capability list: ids and next pointers must survive too.
        var list: [UInt32] = []
        var next = Int(capabilityPointer)
        while next != 0, list.count < 48 {
            list.append(read(next, 2))
            next = Int(read(next + 1, 1))
        }
        capabilities = list
    }
}

@Suite("Fuzz")
struct FuzzTests {
    /// A random access width, mostly valid ones.
    private static func width(_ rng: inout SplitMix64) -> Int {
        [1, 2, 4, 4, 4, 1, 2, 8, 3, 0][Int(rng.next() % 10)]
    }

    /// A random configuration offset, mostly inside the header and capability area.
    private static func configOffset(_ rng: inout SplitMix64) -> Int {
        rng.next() % 8 == 0 ? Int(rng.next() % 0x1000) : Int(rng.next() % 0x100)
    }

    @Test func randomConfigTrafficKeepsIdentity() throws {
        var rng = SplitMix64(seed: 0x5eed_c0de_2024)
        let relocation = RecordingRelocation()
        let bus = PCIBus(relocation: relocation)
        let device = try TestDevice(extendedSpace: true)
        let number = try bus.add(device)
        let ecam = PCIConfigMMIO(bus: bus)
        let io = PCIConfigIO(bus: bus)

        func identity(_ deviceNumber: Int) -> Identity {
            Identity { offset, size in
                bus.readConfig(bus: 0, device: deviceNumber, function: 0, offset: offset, size: size)
            }
        }
        let bridgeBefore = identity(0)
        let deviceBefore = identity(number)
        #expect(deviceBefore.capabilities.count == 3)

        for step in 0..<100_000 {
            let target = rng.next() % 3 == 0 ? 0 : number
            let offset = Self.configOffset(&rng)
            let size = Self.width(&rng)
            let value = rng.next()
            switch rng.next() % 6 {
            case 0, 1:
                ecam.write(offset: PCIConfigMMIO.offset(bus: 0, device: target, function: 0, register: offset), size: size, value: value)
            case 2:
                io.write(offset: 0, size: 4, value: 0x8000_0000 | UInt64(target) << 11 | UInt64(offset & 0xfc))
                io.write(offset: 4 + UInt64(offset & 3), size: size, value: value)
            case 3:
                // Raw port traffic, including garbage to the address register.
                io.write(offset: rng.next() % 8, size: size, value: value)
                _ = io.read(offset: rng.next() % 8, size: size)
            case 4:
                let read = ecam.read(offset: UInt64(rng.next() % (1 << 20)), size: size)
                #expect(read <= DeviceModel.Bus.allOnes(size: size) || size > 4)
            default:
                // MSI-X table and PBA traffic, and interrupts.
                device.writeBAR(index: 2, offset: rng.next() % 0x900, size: size, value: value)
                _ = device.readBAR(index: 2, offset: rng.next() % 0x900, size: size)
                _ = device.trigger(vector: Int(rng.next() % 10) - 1)
            }
            if step % 1000 == 0 {
                #expect(identity(0) == bridgeBefore)
                #expect(identity(number) == deviceBefore)
            }
        }
        #expect(identity(0) == bridgeBefore)
        #expect(identity(number) == deviceBefore)

        // Every reported move is aligned, and each one starts where the previous one ended.
        var last: [Int: UInt64] = [0: 0xc000_0000, 2: 0x8_0000_0000, 4: 0xc040]
        for change in relocation.changes {
            #expect(change.newAddress % change.size == 0)
            #expect(change.oldAddress == last[change.index])
            last[change.index] = change.newAddress
        }
        #expect(relocation.changes.count > 100)
        for bar in device.bars { #expect(bar.address == last[bar.index]) }
        // Whatever MSI-X state the traffic left, no vector is both deliverable and pending.
        let msix = device.msix
        for vector in 0..<msix.vectorCount where msix.isPending(vector: vector) {
            #expect(msix.isMasked(vector: vector))
        }
    }

    @Test func randomByteWritesToAConfigurationValue() {
        var rng = SplitMix64(seed: 42)
        var config = PCIConfiguration.sample(extendedSpace: true)
        let before = Identity { config.read(offset: $0, size: $1) }
        for _ in 0..<20_000 {
            config.write(offset: Int(truncatingIfNeeded: rng.next() % 0x1100) - 8, size: Int(rng.next() % 6), value: UInt32(truncatingIfNeeded: rng.next()))
        }
        #expect(Identity { config.read(offset: $0, size: $1) } == before)
        #expect(config.command & ~PCIConfiguration.commandWritableBits == 0)
    }
}
