import DeviceModel
import Synchronization
import Testing
import TestSupport

/// A device that remembers the last access and answers reads with a fixed pattern.
final class ProbeDevice: BusDevice {
    struct Access: Equatable {
        var offset: UInt64
        var size: Int
        var value: UInt64
    }

    let name: String
    let readValue: UInt64
    private let last = Mutex<Access?>(nil)

    init(_ name: String, readValue: UInt64 = 0x1122_3344_5566_7788) {
        self.name = name
        self.readValue = readValue
    }

    var lastAccess: Access? { last.withLock { $0 } }

    func read(offset: UInt64, size: Int) -> UInt64 {
        last.withLock { $0 = Access(offset: offset, size: size, value: 0) }
        return readValue
    }

    func write(offset: UInt64, size: Int, value: UInt64) {
        last.withLock { $0 = Access(offset: offset, size: size, value: value) }
    }
}

/// A device that does not name itself.
final class AnonymousDevice: BusDevice {
    func read(offset: UInt64, size: Int) -> UInt64 { 0 }
    func write(offset: UInt64, size: Int, value: UInt64) {}
}

/// Runs `body` and returns the bus error it threw, or `nil` when it did not throw.
func busError(_ body: () throws -> Void) -> BusError? {
    do {
        try body()
        return nil
    } catch let error as BusError {
        return error
    } catch {
        Issue.record("unexpected error \(error)")
        return nil
    }
}

@Suite("Bus")
struct BusTests {
    @Test func resolvesFirstAndLastAddressOfARange() throws {
        let bus = Bus(name: "I/O port bus")
        let serial = ProbeDevice("serial")
        try bus.insert(serial, base: 0x3f8, length: 8)

        #expect(bus.resolve(0x3f7) == nil)
        let first = try #require(bus.resolve(0x3f8))
        #expect(first.device === serial && first.offset == 0)
        let last = try #require(bus.resolve(0x3ff))
        #expect(last.device === serial && last.offset == 7)
        #expect(bus.resolve(0x400) == nil)
    }

    @Test func refusesOverlapsAndNamesBothRangesAndDevices() throws {
        let bus = Bus(name: "I/O port bus")
        try bus.insert(ProbeDevice("serial"), base: 0x3f8, length: 8)
        let error = busError { try bus.insert(ProbeDevice("rogue"), base: 0x3f0, length: 0x10) }
        #expect(
            error == .overlap(
                bus: "I/O port bus", newFirst: 0x3f0, newLast: 0x3ff, newDevice: "rogue",
                existingFirst: 0x3f8, existingLast: 0x3ff, existingDevice: "serial"))
        #expect(
            error?.description
                == "I/O port bus: cannot map rogue at [0x3f0-0x3ff]: it overlaps serial at [0x3f8-0x3ff]")
    }

    @Test(arguments: [
        (UInt64(0x3f0), UInt64(0x9)),   // reaches into the first byte
        (UInt64(0x3ff), UInt64(0x1)),   // the last byte only
        (UInt64(0x3fa), UInt64(0x2)),   // strictly inside
        (UInt64(0x300), UInt64(0x200)), // swallows the whole range
    ])
    func refusesEveryKindOfOverlap(base: UInt64, length: UInt64) throws {
        let bus = Bus(name: "bus")
        try bus.insert(ProbeDevice("serial"), base: 0x3f8, length: 8)
        #expect(busError { try bus.insert(ProbeDevice("new"), base: base, length: length) } != nil)
        #expect(bus.mappings.count == 1)
    }

    @Test func acceptsAdjacentRanges() throws {
        let bus = Bus(name: "bus")
        try bus.insert(ProbeDevice("middle"), base: 0x70, length: 2)
        try bus.insert(ProbeDevice("below"), base: 0x60, length: 0x10)
        try bus.insert(ProbeDevice("above"), base: 0x72, length: 1)
        #expect(bus.mappings.map(\.device.name) == ["below", "middle", "above"])
        #expect(bus.resolve(0x6f)?.device.name == "below")
        #expect(bus.resolve(0x70)?.device.name == "middle")
        #expect(bus.resolve(0x72)?.device.name == "above")
    }

    @Test func refusesZeroLength() {
        let bus = Bus(name: "MMIO bus")
        let error = busError { try bus.insert(ProbeDevice("empty"), base: 0x1000, length: 0) }
        #expect(error == .zeroLength(bus: "MMIO bus", base: 0x1000, device: "empty"))
        #expect(error?.description.contains("its length is 0") == true)
    }

    @Test func refusesRangesPastTheTopButAcceptsOneEndingThere() throws {
        let bus = Bus(name: "MMIO bus")
        let error = busError { try bus.insert(ProbeDevice("big"), base: .max - 1, length: 3) }
        #expect(error == .rangeOverflow(bus: "MMIO bus", base: .max - 1, length: 3, device: "big"))
        try bus.insert(ProbeDevice("top"), base: .max - 1, length: 2)
        #expect(bus.resolve(.max)?.offset == 1)
        #expect(bus.mappings.first?.last == .max)
    }

    @Test func removeUnmapsOnlyAnExactBase() throws {
        let bus = Bus(name: "I/O port bus")
        let rtc = ProbeDevice("rtc")
        try bus.insert(rtc, base: 0x70, length: 2)
        #expect(busError { try bus.remove(base: 0x71) } == .notMapped(bus: "I/O port bus", base: 0x71))
        let removed = try bus.remove(base: 0x70)
        #expect(removed === rtc)
        #expect(bus.resolve(0x70) == nil)
        #expect(bus.mappings.isEmpty)
        let again = busError { try bus.remove(base: 0x70) }
        #expect(again?.description == "I/O port bus: cannot unmap the device at 0x70: no device range starts there")
        // The range is free again.
        try bus.insert(ProbeDevice("rtc2"), base: 0x70, length: 2)
    }

    @Test func unmappedAccessesReportThemselves() {
        let bus = Bus(name: "I/O port bus")
        #expect(bus.read(address: 0x60, size: 1) == nil)
        #expect(bus.write(address: 0x60, size: 1, value: 0xff) == false)
        #expect(bus.readOrAllOnes(address: 0x60, size: 1) == 0xff)
        #expect(bus.readOrAllOnes(address: 0x60, size: 2) == 0xffff)
        #expect(bus.readOrAllOnes(address: 0x60, size: 4) == 0xffff_ffff)
        #expect(bus.readOrAllOnes(address: 0x60, size: 8) == .max)
    }

    @Test func readsAreMaskedToTheAccessSizeAndOffsetsPassedThrough() throws {
        let bus = Bus(name: "MMIO bus")
        let device = ProbeDevice("regs")
        try bus.insert(device, base: 0xd000_0000, length: 0x1000)
        #expect(bus.read(address: 0xd000_0010, size: 1) == 0x88)
        #expect(device.lastAccess == .init(offset: 0x10, size: 1, value: 0))
        #expect(bus.read(address: 0xd000_0010, size: 2) == 0x7788)
        #expect(bus.read(address: 0xd000_0010, size: 4) == 0x5566_7788)
        #expect(bus.read(address: 0xd000_0010, size: 8) == 0x1122_3344_5566_7788)
        #expect(bus.readOrAllOnes(address: 0xd000_0ffc, size: 4) == 0x5566_7788)

        #expect(bus.write(address: 0xd000_0ffe, size: 2, value: 0xdead_beef))
        #expect(device.lastAccess == .init(offset: 0xffe, size: 2, value: 0xbeef))
    }

    @Test(arguments: [0, -1, 3, 9, 16])
    func oddSizesAreRefused(size: Int) throws {
        let bus = Bus(name: "bus")
        let device = ProbeDevice("regs")
        try bus.insert(device, base: 0, length: 16)
        if size == 3 {
            // 3 is unusual but within 1...8: it is delivered.
            #expect(bus.read(address: 0, size: size) == 0x66_7788)
        } else {
            #expect(bus.read(address: 0, size: size) == nil)
            #expect(bus.write(address: 0, size: size, value: 1) == false)
            #expect(device.lastAccess == nil)
        }
    }

    @Test func allOnesAndMasks() {
        #expect(Bus.allOnes(size: 1) == 0xff)
        #expect(Bus.allOnes(size: 3) == 0xff_ffff)
        #expect(Bus.allOnes(size: 8) == .max)
        #expect(Bus.allOnes(size: 12) == .max)
        #expect(Bus.mask(size: 0) == 0)
        #expect(Bus.mask(size: -4) == 0)
    }

    @Test func devicesWithoutANameUseTheirTypeName() throws {
        let bus = Bus(name: "bus")
        try bus.insert(AnonymousDevice(), base: 0x10, length: 1)
        let error = busError { try bus.insert(ProbeDevice("probe"), base: 0x10, length: 1) }
        #expect(error?.description.contains("it overlaps AnonymousDevice at [0x10-0x10]") == true)
    }

    @Test func concurrentAccessesAndRemapsStayConsistent() async throws {
        let bus = Bus(name: "bus")
        for index in 0..<16 {
            try bus.insert(ProbeDevice("fixed\(index)"), base: UInt64(index) * 0x100, length: 0x10)
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for round in 0..<500 {
                    let base = 0x1_0000 + UInt64(round % 7) * 0x20
                    try? bus.insert(ProbeDevice("hot"), base: base, length: 0x20)
                    _ = try? bus.remove(base: base)
                }
            }
            for reader in 0..<3 {
                group.addTask {
                    for step in 0..<2000 {
                        let address = UInt64((step * 37 + reader * 11) % 16) * 0x100 + 4
                        #expect(bus.read(address: address, size: 1) == 0x88)
                    }
                }
            }
        }
        #expect(bus.mappings.count == 16)
    }
}

@Suite("Bus randomized against a linear model")
struct BusModelTests {
    @Test func randomInsertsRemovesAndLookupsAgreeWithALinearScan() throws {
        var random = SplitMix64(seed: 0x5eed_b05)
        let bus = Bus(name: "bus")
        var model: [(base: UInt64, length: UInt64, name: String)] = []
        for step in 0..<20_000 {
            let base = random.next() % 0x400
            let length = random.next() % 0x20 + (step % 50 == 0 ? 0 : 1)
            switch random.next() % 4 {
            case 0, 1:
                let name = "d\(step)"
                let clash = model.contains { length > 0 && base <= $0.base + $0.length - 1 && $0.base <= base + length - 1 }
                let error = busError { try bus.insert(ProbeDevice(name), base: base, length: length) }
                #expect((error == nil) == (length > 0 && !clash))
                if error == nil { model.append((base, length, name)) }
            case 2:
                let exists = model.firstIndex { $0.base == base }
                let error = busError { try bus.remove(base: base) }
                #expect((error == nil) == (exists != nil))
                if let exists { model.remove(at: exists) }
            default:
                let expected = model.first { base >= $0.base && base - $0.base < $0.length }
                let found = bus.resolve(base)
                #expect(found?.device.name == expected?.name)
                if let expected { #expect(found?.offset == base - expected.base) }
            }
        }
        #expect(bus.mappings.map(\.base) == model.map(\.base).sorted())
    }
}

@Suite("InterruptLine")
struct InterruptLineTests {
    final class EdgeCounter: InterruptLine {
        let edges = Mutex(0)
        func trigger() throws { edges.withLock { $0 += 1 } }
    }

    @Test func defaultLevelHandlingTriggersOnlyOnHigh() throws {
        let line = EdgeCounter()
        try line.setLevel(true)
        try line.setLevel(false)
        try line.setLevel(true)
        #expect(line.edges.withLock { $0 } == 2)
    }
}


/// The device from the module README, compiled here so the example stays true.
final class ScratchRegister: BusDevice {
    private let value = Mutex<UInt8>(0)
    var name: String { "scratch" }
    func read(offset: UInt64, size: Int) -> UInt64 { UInt64(value.withLock { $0 }) }
    func write(offset: UInt64, size: Int, value newValue: UInt64) {
        value.withLock { $0 = UInt8(truncatingIfNeeded: newValue) }
    }
}

@Suite("README example")
struct ReadmeExampleTests {
    @Test func exampleBehavesAsDocumented() throws {
        let pio = Bus(name: "I/O port bus")
        try pio.insert(ScratchRegister(), base: 0x510, length: 1)
        pio.write(address: 0x510, size: 1, value: 0x42)
        #expect(pio.readOrAllOnes(address: 0x510, size: 1) == 0x42)
        #expect(pio.readOrAllOnes(address: 0x511, size: 1) == 0xff)
        let error = busError { try pio.insert(ScratchRegister(), base: 0x500, length: 0x20) }
        #expect(error?.description == "I/O port bus: cannot map scratch at [0x500-0x51f]: it overlaps scratch at [0x510-0x510]")
    }
}
