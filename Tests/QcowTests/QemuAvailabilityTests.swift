import Testing

@Suite("qemu-utils availability")
struct QemuAvailabilityTests {
    @Test("qemu-img and qemu-io are present when the environment requires them")
    func requiredToolsArePresent() {
        if Qemu.required {
            #expect(Qemu.img != nil, "CH_REQUIRE_QEMU_IMG=1 but qemu-img is not installed (apt-get install qemu-utils)")
            #expect(Qemu.io != nil, "CH_REQUIRE_QEMU_IMG=1 but qemu-io is not installed (apt-get install qemu-utils)")
        } else if !Qemu.available {
            print("qemu-utils tests \(Qemu.reason)")
        }
    }
}
