import HypervisorTesting
import Testing

/// The test-guest assembler against encodings taken from GNU as (`gcc -c -m32` of the
/// same Intel-syntax text, read back with `objdump -d -M intel`), which follow the Intel SDM.
@Suite("X86Assembler encodings")
struct X86AssemblerTests {
    typealias A = X86Assembler

    /// Assembles `body` alone.
    func code(_ body: (inout A) -> Void) throws -> [UInt8] {
        var a = A()
        body(&a)
        return try a.assemble()
    }

    @Test("Moves: immediates, registers, absolute and based memory, the accumulator's moffs forms")
    func moves() throws {
        let cases: [(String, (inout A) -> Void, [UInt8])] = [
            ("mov eax,0x12345678", { $0.mov(.eax, 0x1234_5678) }, [0xB8, 0x78, 0x56, 0x34, 0x12]),
            ("mov esp,0x8000", { $0.mov(.esp, 0x8000) }, [0xBC, 0x00, 0x80, 0x00, 0x00]),
            ("mov ecx,eax", { $0.mov(.ecx, .eax) }, [0x89, 0xC1]),
            ("mov edi,esi", { $0.mov(.edi, .esi) }, [0x89, 0xF7]),
            ("mov [0x200000],ecx", { $0.mov(.absolute(0x20_0000), .ecx) }, [0x89, 0x0D, 0x00, 0x00, 0x20, 0x00]),
            ("mov [0x200000],al", { $0.mov(.absolute(0x20_0000), .al) }, [0xA2, 0x00, 0x00, 0x20, 0x00]),
            ("mov [0x200000],dx", { $0.mov(.absolute(0x20_0000), .dx) }, [0x66, 0x89, 0x15, 0x00, 0x00, 0x20, 0x00]),
            ("mov [0x200000],ax", { $0.mov(.absolute(0x20_0000), .ax) }, [0x66, 0xA3, 0x00, 0x00, 0x20, 0x00]),
            ("mov [0x200000],eax", { $0.mov(.absolute(0x20_0000), .eax) }, [0xA3, 0x00, 0x00, 0x20, 0x00]),
            ("mov eax,[0x200000]", { $0.mov(.eax, .absolute(0x20_0000)) }, [0xA1, 0x00, 0x00, 0x20, 0x00]),
            ("mov al,[0x200000]", { $0.mov(.al, .absolute(0x20_0000)) }, [0xA0, 0x00, 0x00, 0x20, 0x00]),
            ("mov dword [0x200000],0xdeadbeef", { $0.mov(dword: .absolute(0x20_0000), 0xDEAD_BEEF) },
             [0xC7, 0x05, 0x00, 0x00, 0x20, 0x00, 0xEF, 0xBE, 0xAD, 0xDE]),
            ("mov word [esi+0x16],8", { $0.mov(word: .at(.esi, 0x16), 8) }, [0x66, 0xC7, 0x46, 0x16, 0x08, 0x00]),
            ("mov byte [esi+0x14],3", { $0.mov(byte: .at(.esi, 0x14), 3) }, [0xC6, 0x46, 0x14, 0x03]),
            ("mov edx,[0x200004]", { $0.mov(.edx, .absolute(0x20_0004)) }, [0x8B, 0x15, 0x04, 0x00, 0x20, 0x00]),
            ("mov [esi+0x20],eax", { $0.mov(.at(.esi, 0x20), .eax) }, [0x89, 0x46, 0x20]),
            ("mov eax,[ebx+0x1000]", { $0.mov(.eax, .at(.ebx, 0x1000)) }, [0x8B, 0x83, 0x00, 0x10, 0x00, 0x00]),
            ("mov eax,[esp+4]", { $0.mov(.eax, .at(.esp, 4)) }, [0x8B, 0x44, 0x24, 0x04]),
            ("mov eax,[ebp]", { $0.mov(.eax, .at(.ebp)) }, [0x8B, 0x45, 0x00]),
            ("mov eax,[esi]", { $0.mov(.eax, .at(.esi)) }, [0x8B, 0x06]),
            ("mov ax,[esi-2]", { $0.mov(.ax, .at(.esi, -2)) }, [0x66, 0x8B, 0x46, 0xFE]),
            ("mov al,[esi+0x14]", { $0.mov(.al, .at(.esi, 0x14)) }, [0x8A, 0x46, 0x14]),
            ("movzx eax,byte [esi+0x14]", { $0.movzx(.eax, byte: .at(.esi, 0x14)) }, [0x0F, 0xB6, 0x46, 0x14]),
            ("movzx ecx,word [0x201002]", { $0.movzx(.ecx, word: .absolute(0x20_1002)) }, [0x0F, 0xB7, 0x0D, 0x02, 0x10, 0x20, 0x00]),
            ("movzx eax,al", { $0.movzx(.eax, .al) }, [0x0F, 0xB6, 0xC0]),
            ("movzx edx,dx", { $0.movzx(.edx, .dx) }, [0x0F, 0xB7, 0xD2]),
            ("lea edi,[esi+0x6000]", { $0.lea(.edi, .at(.esi, 0x6000)) }, [0x8D, 0xBE, 0x00, 0x60, 0x00, 0x00]),
            ("mov dx,0x3f8", { $0.mov(.dx, 0x3F8) }, [0x66, 0xBA, 0xF8, 0x03]),
            ("mov al,0x41", { $0.mov(.al, 0x41) }, [0xB0, 0x41]),
            ("mov ah,al", { $0.mov(.ah, .al) }, [0x88, 0xC4]),
        ]
        for (text, body, expected) in cases {
            #expect(try code(body) == expected, "\(text)")
        }
    }

    @Test("Arithmetic, logic, shifts and tests pick GNU as's short forms")
    func arithmetic() throws {
        let cases: [(String, (inout A) -> Void, [UInt8])] = [
            ("add eax,1", { $0.add(.eax, 1) }, [0x83, 0xC0, 0x01]),
            ("add eax,0x1000", { $0.add(.eax, 0x1000) }, [0x05, 0x00, 0x10, 0x00, 0x00]),
            ("add ecx,0x1000", { $0.add(.ecx, 0x1000) }, [0x81, 0xC1, 0x00, 0x10, 0x00, 0x00]),
            ("sub edx,4", { $0.sub(.edx, 4) }, [0x83, 0xEA, 0x04]),
            ("and eax,0xf", { $0.and(.eax, 0xF) }, [0x83, 0xE0, 0x0F]),
            ("or ebx,0x80000000", { $0.or(.ebx, 0x8000_0000) }, [0x81, 0xCB, 0x00, 0x00, 0x00, 0x80]),
            ("xor edi,eax", { $0.xor(.edi, .eax) }, [0x31, 0xC7]),
            ("cmp edx,0x10000", { $0.cmp(.edx, 0x1_0000) }, [0x81, 0xFA, 0x00, 0x00, 0x01, 0x00]),
            ("cmp eax,ecx", { $0.cmp(.eax, .ecx) }, [0x39, 0xC8]),
            ("add esi,edi", { $0.add(.esi, .edi) }, [0x01, 0xFE]),
            ("cmp al,0xfe", { $0.cmp(.al, 0xFE) }, [0x3C, 0xFE]),
            ("and al,0x7f", { $0.alu(.and, .al, 0x7F) }, [0x24, 0x7F]),
            ("cmp bl,0x10", { $0.cmp(.bl, 0x10) }, [0x80, 0xFB, 0x10]),
            ("cmp dword [esi+4],0", { $0.alu(.cmp, dword: .at(.esi, 4), 0) }, [0x83, 0x7E, 0x04, 0x00]),
            ("sub ecx,-1 (0xffffffff as a signed byte)", { $0.sub(.ecx, 0xFFFF_FFFF) }, [0x83, 0xE9, 0xFF]),
            ("test eax,eax", { $0.test(.eax, .eax) }, [0x85, 0xC0]),
            ("test eax,0x40", { $0.test(.eax, 0x40) }, [0xA9, 0x40, 0x00, 0x00, 0x00]),
            ("test ecx,0x40", { $0.test(.ecx, 0x40) }, [0xF7, 0xC1, 0x40, 0x00, 0x00, 0x00]),
            ("test al,1", { $0.test(.al, 1) }, [0xA8, 0x01]),
            ("test bl,0x40", { $0.test(.bl, 0x40) }, [0xF6, 0xC3, 0x40]),
            ("shl eax,13", { $0.shl(.eax, 13) }, [0xC1, 0xE0, 0x0D]),
            ("shr eax,17", { $0.shr(.eax, 17) }, [0xC1, 0xE8, 0x11]),
            ("shl eax,1", { $0.shl(.eax, 1) }, [0xD1, 0xE0]),
            ("rol ebx,4", { $0.rol(.ebx, 4) }, [0xC1, 0xC3, 0x04]),
            ("sar ecx,2", { $0.shift(.sar, .ecx, 2) }, [0xC1, 0xF9, 0x02]),
            ("shl eax,cl", { $0.shiftByCL(.shl, .eax) }, [0xD3, 0xE0]),
            ("inc edx", { $0.inc(.edx) }, [0x42]),
            ("dec ecx", { $0.dec(.ecx) }, [0x49]),
            ("not eax", { $0.not(.eax) }, [0xF7, 0xD0]),
            ("neg ecx", { $0.neg(.ecx) }, [0xF7, 0xD9]),
        ]
        for (text, body, expected) in cases {
            #expect(try code(body) == expected, "\(text)")
        }
    }

    @Test("Port I/O, stack and single-byte instructions")
    func portsAndMisc() throws {
        let bytes = try code { a in
            a.outByte(); a.outWord(); a.outDword(); a.outByte(port: 0x80)
            a.inByte(); a.inWord(); a.inDword(); a.inByte(port: 0x61)
            a.push(.ebx); a.pop(.esi); a.ret(); a.hlt(); a.cli(); a.nop()
        }
        #expect(bytes == [0xEE, 0x66, 0xEF, 0xEF, 0xE6, 0x80, 0xEC, 0x66, 0xED, 0xED, 0xE4, 0x61,
                          0x53, 0x5E, 0xC3, 0xF4, 0xFA, 0x90])
    }

    @Test("Jumps and calls to labels before and after them are patched as rel32")
    func jumps() throws {
        // top: jmp top; jne fwd; jb top; call fwd; nop; fwd: jae top
        var a = A()
        let top = a.here(), forward = a.label()
        a.jmp(top)
        a.jne(forward)
        a.jb(top)
        a.call(forward)
        a.nop()
        a.bind(forward)
        a.jae(top)
        #expect(try a.assemble() == [
            0xE9, 0xFB, 0xFF, 0xFF, 0xFF,
            0x0F, 0x85, 0x0C, 0x00, 0x00, 0x00,
            0x0F, 0x82, 0xEF, 0xFF, 0xFF, 0xFF,
            0xE8, 0x01, 0x00, 0x00, 0x00,
            0x90,
            0x0F, 0x83, 0xE3, 0xFF, 0xFF, 0xFF,
        ])
        // Every condition code lands in the opcode's low nibble.
        for condition in A.Condition.allCases {
            var b = A()
            let here = b.here()
            b.j(condition, here)
            #expect(try b.assemble() == [0x0F, 0x80 + condition.rawValue, 0xFA, 0xFF, 0xFF, 0xFF])
        }
    }

    @Test("Addresses of labels resolve against the origin")
    func labelAddresses() throws {
        var a = A(origin: 0x10_0000)
        let data = a.label()
        a.mov(.esi, addressOf: data)
        a.hlt()
        a.bind(data)
        a.emit(string: "hi")
        #expect(try a.assemble() == [0xBE, 0x06, 0x00, 0x10, 0x00, 0xF4, 0x68, 0x69])
    }

    @Test("A label used but never bound, or bound twice, is an error that says so")
    func labelErrors() throws {
        var a = A()
        let missing = a.label()
        a.jmp(missing)
        #expect(throws: A.AssemblerError.unboundLabel(id: 1)) { try a.assemble() }
        #expect(A.AssemblerError.unboundLabel(id: 1).description.contains("never bound"))

        var b = A()
        let twice = b.here()
        b.nop()
        b.bind(twice)
        #expect(throws: A.AssemblerError.labelBoundTwice(id: 1, first: 0, second: 1)) { try b.assemble() }
    }

    @Test("The serial and power-off helpers reproduce the hand-assembled tiny kernels' sequences")
    func helpers() throws {
        var a = A()
        a.serialPrint("OK")
        a.powerOff()
        // mov edx,0x3f8; mov al,'O'; out dx,al; mov al,'K'; out dx,al;
        // mov edx,0x600; mov al,0x34; out dx,al; 1: hlt; jmp 1b (rel32)
        #expect(try a.assemble() == [
            0xBA, 0xF8, 0x03, 0x00, 0x00, 0xB0, 0x4F, 0xEE, 0xB0, 0x4B, 0xEE,
            0xBA, 0x00, 0x06, 0x00, 0x00, 0xB0, 0x34, 0xEE, 0xF4, 0xE9, 0xFA, 0xFF, 0xFF, 0xFF,
        ])
        // xorshift32: mov eax,edi; shl eax,13; xor edi,eax; mov eax,edi; shr eax,17; xor edi,eax;
        // mov eax,edi; shl eax,5; xor edi,eax
        var x = A()
        x.xorshift32(state: .edi, scratch: .eax)
        #expect(try x.assemble() == [
            0x89, 0xF8, 0xC1, 0xE0, 0x0D, 0x31, 0xC7,
            0x89, 0xF8, 0xC1, 0xE8, 0x11, 0x31, 0xC7,
            0x89, 0xF8, 0xC1, 0xE0, 0x05, 0x31, 0xC7,
        ])
    }
}
