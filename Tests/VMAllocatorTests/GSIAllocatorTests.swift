import Testing
import VMAllocator

@Suite("GSIAllocator")
struct GSIAllocatorTests {
    @Test("legacy IRQs and MSI GSIs come from separate pools")
    func legacyAndMSISeparation() throws {
        var gsis = GSIAllocator()
        #expect(try gsis.allocateGSI() == 24)
        #expect(try gsis.allocateLegacyIRQ() == 0)
        #expect(try gsis.allocateGSI() == 25)
        for expected in UInt32(1)..<24 { #expect(try gsis.allocateLegacyIRQ() == expected) }
        #expect(throws: AllocatorError.idsExhausted(pool: GSIAllocator.legacyPoolName, range: 0...23)) {
            try gsis.allocateLegacyIRQ()
        }
        // Running out of pins does not touch the MSI pool.
        #expect(try gsis.allocateGSI() == 26)
        #expect(gsis.isAllocated(23) && gsis.isAllocated(26) && !gsis.isAllocated(27))
    }

    @Test("reserved legacy IRQs are skipped and cannot be taken twice")
    func reservation() throws {
        var gsis = GSIAllocator()
        try gsis.reserveLegacyIRQ(4)  // COM1
        try gsis.reserveLegacyIRQ(0)
        var handedOut: [UInt32] = []
        for _ in 0..<5 { handedOut.append(try gsis.allocateLegacyIRQ()) }
        #expect(handedOut == [1, 2, 3, 5, 6])
        #expect(throws: AllocatorError.alreadyAllocated(4, pool: "legacy IRQs")) { try gsis.reserveLegacyIRQ(4) }
        #expect(throws: AllocatorError.idOutOfRange(24, pool: "legacy IRQs", range: 0...23)) {
            try gsis.reserveLegacyIRQ(24)
        }
        try gsis.free(4)
        #expect(try gsis.allocateLegacyIRQ() == 4)
        try gsis.reserveGSI(30)
        #expect(throws: AllocatorError.idOutOfRange(5, pool: "MSI GSIs", range: 24...4095)) { try gsis.reserveGSI(5) }
        #expect(throws: AllocatorError.alreadyAllocated(30, pool: "MSI GSIs")) { try gsis.reserveGSI(30) }
    }

    @Test("freeing dispatches to the right pool and rejects strangers")
    func freeing() throws {
        var gsis = GSIAllocator(legacyIRQs: 0..<16, msiGSIs: 32..<40)
        let pin = try gsis.allocateLegacyIRQ()
        var msis: [UInt32] = []
        for _ in 0..<8 { msis.append(try gsis.allocateGSI()) }
        #expect(msis == Array(32..<40))
        #expect(throws: AllocatorError.idsExhausted(pool: "MSI GSIs", range: 32...39)) { try gsis.allocateGSI() }
        try gsis.free(35)
        #expect(try gsis.allocateGSI() == 35)
        try gsis.free(pin)
        #expect(throws: AllocatorError.idNotAllocated(pin, pool: "legacy IRQs")) { try gsis.free(pin) }
        #expect(throws: AllocatorError.idOutOfRange(17, pool: "legacy IRQs", range: 0...15)) { try gsis.free(17) }
        #expect(throws: AllocatorError.idOutOfRange(30, pool: "MSI GSIs", range: 32...39)) { try gsis.free(30) }
        #expect(throws: AllocatorError.idOutOfRange(4000, pool: "MSI GSIs", range: 32...39)) { try gsis.free(4000) }
    }
}
