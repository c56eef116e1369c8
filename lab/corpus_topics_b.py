"""Topic bank, part B: forms of selection and the preparation of a package.

Placeholders as in ``corpus_topics_a``.
"""

from __future__ import annotations

from ragperf_lab.corpus_text import Topic, topic

TOPICS_B: tuple[Topic, ...] = (
    topic(
        "rong_rai",
        "hinh_thuc",
        """
        Đấu thầu rộng rãi
        Điều kiện áp dụng đấu thầu rộng rãi
        """,
        """
        Đấu thầu rộng rãi là hình thức lựa chọn nhà thầu không hạn chế số lượng nhà thầu tham dự, áp dụng \
            đối với {sector} {scope}.
        Đấu thầu rộng rãi được áp dụng cho các gói thầu, trừ trường hợp đủ điều kiện áp dụng hình thức khác.
        Thời gian chuẩn bị hồ sơ dự thầu tối thiểu là {days} ngày đối với đấu thầu trong nước kể từ ngày \
            phát hành hồ sơ mời thầu.
        Gói thầu có giá trên {amount2} phải áp dụng đấu thầu rộng rãi quốc tế khi hàng hóa trong nước chưa \
            sản xuất được.
        """,
        """
        bên mời thầu không được hạn chế nhà thầu tham dự
        không được nêu điều kiện nhằm tạo lợi thế cho một hoặc một số nhà thầu
        phải phát hành hồ sơ mời thầu miễn phí trên Hệ thống mạng đấu thầu quốc gia
        """,
        """
        [0] Thời gian chuẩn bị hồ sơ dự thầu tối thiểu khi đấu thầu rộng rãi là bao nhiêu ngày?
        [1] Khi nào phải áp dụng đấu thầu rộng rãi đối với {pkg}?
        """,
    ),
    topic(
        "han_che",
        "hinh_thuc",
        """
        Đấu thầu hạn chế
        Điều kiện áp dụng đấu thầu hạn chế
        """,
        """
        Đấu thầu hạn chế được áp dụng đối với {sector} {scope} có yêu cầu cao về kỹ thuật hoặc kỹ thuật có tính đặc \
            thù mà chỉ có một số nhà thầu đáp ứng.
        Bên mời thầu phải mời tối thiểu {count} nhà thầu được xác định là có đủ năng lực và kinh nghiệm tham dự thầu.
        Việc áp dụng đấu thầu hạn chế phải được người có thẩm quyền phê duyệt trong kế hoạch lựa chọn nhà thầu.
        """,
        """
        gói thầu có yêu cầu cao về kỹ thuật
        gói thầu nghiên cứu, thử nghiệm
        gói thầu có tính đặc thù mà chỉ một số nhà thầu đáp ứng
        """,
        """
        [0] Đấu thầu hạn chế phải mời tối thiểu bao nhiêu nhà thầu theo {ref}?
        [1] {pkg} nào được áp dụng đấu thầu hạn chế?
        """,
    ),
    topic(
        "chi_dinh",
        "hinh_thuc",
        """
        Chỉ định thầu
        Hạn mức chỉ định thầu
        Quy trình chỉ định thầu rút gọn
        """,
        """
        Chỉ định thầu được áp dụng đối với {sector} {scope} có giá gói thầu không quá {amount} đối với dịch vụ tư \
            vấn và không quá {amount2} đối với xây lắp, hàng hóa.
        Chỉ định thầu được áp dụng trong các trường hợp sau:
        Thời hạn hoàn thiện, ký kết hợp đồng chỉ định thầu không quá {days} ngày kể từ ngày phê duyệt kết \
            quả chỉ định thầu.
        Giá trị đề nghị chỉ định thầu không vượt giá gói thầu; trường hợp cần thiết có thể giảm {pct} so \
            với dự toán được duyệt.
        """,
        """
        gói thầu cần triển khai ngay để khắc phục sự cố bất khả kháng
        gói thầu cấp bách nhằm bảo đảm quốc phòng, an ninh
        gói thầu mua sắm hàng hóa cần tương thích với thiết bị, công nghệ đã mua trước đó
        gói thầu tư vấn lập báo cáo nghiên cứu khả thi do tác giả thiết kế thực hiện
        gói thầu di dời công trình hạ tầng kỹ thuật phục vụ giải phóng mặt bằng
        gói thầu thuộc dự án bí mật nhà nước
        """,
        """
        [1] Hạn mức chỉ định thầu đối với {pkg} là bao nhiêu?
        [0,1] Gói thầu có giá không quá {amount} có được chỉ định thầu không theo {ref}?
        [2] Quy trình chỉ định thầu rút gọn thực hiện trong bao nhiêu ngày?
        """,
    ),
    topic(
        "chao_hang",
        "hinh_thuc",
        """
        Chào hàng cạnh tranh
        Quy trình chào hàng cạnh tranh rút gọn
        """,
        """
        Chào hàng cạnh tranh được áp dụng đối với {sector} {scope} có giá gói thầu không quá {amount2}.
        Thời gian để nhà thầu chuẩn bị hồ sơ đề xuất tối thiểu là {days} ngày làm việc kể từ ngày đầu tiên \
            phát hành hồ sơ yêu cầu.
        Gói thầu áp dụng chào hàng cạnh tranh phải có thiết kế kỹ thuật và dự toán được duyệt, đáp ứng các \
            yêu cầu sau:
        Nhà thầu có giá chào thấp nhất sau sửa lỗi, hiệu chỉnh sai lệch và không vượt giá gói thầu được đề \
            nghị trúng thầu.
        """,
        """
        dịch vụ phi tư vấn thông dụng, đơn giản
        hàng hóa thông dụng, sẵn có trên thị trường với đặc tính kỹ thuật được tiêu chuẩn hóa
        công trình xây lắp đơn giản đã có thiết kế bản vẽ thi công được duyệt
        gói thầu hỗn hợp cung cấp và lắp đặt thiết bị thông dụng
        """,
        """
        [0] Chào hàng cạnh tranh áp dụng cho gói thầu có giá tối đa bao nhiêu theo {ref}?
        [1] Thời gian chuẩn bị hồ sơ đề xuất khi chào hàng cạnh tranh {pkg} là bao lâu?
        """,
    ),
    topic(
        "mua_sam_truc_tiep",
        "hinh_thuc",
        """
        Mua sắm trực tiếp
        Điều kiện áp dụng mua sắm trực tiếp
        """,
        """
        Mua sắm trực tiếp được áp dụng đối với {sector} {scope} có nội dung tương tự thuộc cùng một dự án hoặc dự \
            toán mua sắm.
        Đơn giá của các phần công việc thuộc gói thầu mua sắm trực tiếp không được vượt đơn giá của hợp \
            đồng trước đó và khối lượng không vượt quá {pct2} khối lượng đã ký.
        Thời hạn áp dụng mua sắm trực tiếp không quá {months} tháng kể từ ngày ký hợp đồng trước đó.
        Nhà thầu thực hiện mua sắm trực tiếp phải đáp ứng các điều kiện sau:
        """,
        """
        đã trúng thầu thông qua đấu thầu rộng rãi hoặc đấu thầu hạn chế
        đã ký hợp đồng thực hiện gói thầu trước đó
        có năng lực thực hiện gói thầu mới
        được chủ đầu tư đánh giá hoàn thành tốt hợp đồng trước đó
        """,
        """
        [0] Mua sắm trực tiếp được áp dụng trong thời hạn bao nhiêu tháng theo {ref}?
        [1] Điều kiện để mua sắm trực tiếp {pkg} là gì?
        """,
    ),
    topic(
        "tu_thuc_hien",
        "hinh_thuc",
        """
        Tự thực hiện
        Tham gia thực hiện của cộng đồng
        """,
        """
        Hình thức tự thực hiện được áp dụng khi cơ quan, đơn vị có năng lực kỹ thuật, tài chính và kinh \
            nghiệm đáp ứng yêu cầu của {sector} {scope}.
        Cộng đồng dân cư, tổ chức đoàn thể tại địa phương được giao thực hiện toàn bộ hoặc một phần gói \
            thầu có giá không quá {amount}.
        Đơn vị tự thực hiện không được chuyển nhượng khối lượng công việc với tổng số tiền từ {pct2} giá \
            gói thầu trở lên.
        Hồ sơ đề nghị tự thực hiện gồm:
        """,
        """
        phương án tổ chức thực hiện gói thầu
        danh sách nhân sự, máy móc, thiết bị huy động
        dự toán chi phí được duyệt
        văn bản chấp thuận của người có thẩm quyền
        """,
        """
        [0] Khi nào cơ quan được áp dụng hình thức tự thực hiện theo {ref}?
        [1] Cộng đồng dân cư được tham gia thực hiện gói thầu có giá tối đa bao nhiêu?
        """,
    ),
    topic(
        "dac_biet",
        "hinh_thuc",
        """
        Lựa chọn nhà thầu trong trường hợp đặc biệt
        Đàm phán giá
        """,
        """
        Trường hợp gói thầu {sector} {scope} xuất hiện các điều kiện đặc thù, riêng biệt mà không thể áp dụng các \
            hình thức lựa chọn nhà thầu khác thì người có thẩm quyền trình Thủ tướng Chính phủ xem xét.
        Đàm phán giá được áp dụng đối với thuốc biệt dược gốc, thuốc hiếm, thiết bị y tế chỉ có từ một đến \
            hai hãng sản xuất.
        Phương án lựa chọn nhà thầu trong trường hợp đặc biệt phải được phê duyệt trong thời hạn {days} \
            ngày kể từ ngày nhận đủ hồ sơ.
        Các gói thầu, nội dung mua sắm áp dụng trường hợp đặc biệt gồm:
        """,
        """
        mua sắm vật tư, hàng hóa phục vụ phòng, chống dịch bệnh khẩn cấp
        in tiền, in giấy tờ có giá và ấn chỉ đặc biệt
        mua sắm phục vụ hoạt động đối ngoại cấp cao
        cung cấp dịch vụ bưu chính công ích
        mua sắm nhằm duy trì hoạt động thường xuyên của cơ quan đặc thù
        """,
        """
        [0] Thế nào là lựa chọn nhà thầu trong trường hợp đặc biệt theo {ref}?
        [1] Đàm phán giá được áp dụng cho những mặt hàng nào?
        """,
    ),
    topic(
        "mua_sam_tap_trung",
        "hinh_thuc",
        """
        Mua sắm tập trung
        Thỏa thuận khung trong mua sắm tập trung
        """,
        """
        Mua sắm tập trung là cách tổ chức đấu thầu rộng rãi để lựa chọn nhà thầu thông qua đơn vị mua sắm \
            tập trung nhằm giảm chi phí và thời gian cho {sector} {scope}.
        Thỏa thuận khung được ký giữa đơn vị mua sắm tập trung và nhà thầu trúng thầu với thời hạn không \
            quá {months} tháng.
        Đơn vị có nhu cầu mua sắm gửi số lượng, chủng loại hàng hóa cho đơn vị mua sắm tập trung chậm nhất \
            {days} ngày trước thời điểm tổng hợp nhu cầu hằng năm.
        Danh mục mua sắm tập trung gồm:
        """,
        """
        xe ô tô phục vụ công tác chung
        máy móc, thiết bị văn phòng có số lượng lớn
        thuốc thuộc danh mục đấu thầu tập trung cấp quốc gia
        vật tư y tế và hóa chất xét nghiệm sử dụng phổ biến
        phần mềm, dịch vụ công nghệ thông tin dùng chung
        """,
        """
        [1] Thỏa thuận khung trong mua sắm tập trung có thời hạn bao lâu theo {ref}?
        [0] Danh mục mua sắm tập trung gồm những hàng hóa nào đối với {pkg}?
        """,
    ),
    topic(
        "ke_hoach",
        "quy_trinh",
        """
        Lập kế hoạch lựa chọn nhà thầu
        Thẩm định và phê duyệt kế hoạch lựa chọn nhà thầu
        Phân chia dự án, dự toán mua sắm thành các gói thầu
        """,
        """
        Kế hoạch lựa chọn nhà thầu đối với {sector} {scope} được lập cho toàn bộ dự án, dự toán mua sắm hoặc cho \
            một số gói thầu thực hiện trước.
        Thời gian thẩm định kế hoạch lựa chọn nhà thầu tối đa là {days} ngày kể từ ngày nhận được đầy đủ hồ sơ trình.
        Việc phân chia gói thầu phải bảo đảm tính đồng bộ, quy mô hợp lý; nghiêm cấm chia nhỏ gói thầu nhằm \
            mục đích chỉ định thầu.
        Nội dung kế hoạch lựa chọn nhà thầu gồm:
        """,
        """
        tên gói thầu và tóm tắt công việc chủ yếu
        giá gói thầu và nguồn vốn
        hình thức và phương thức lựa chọn nhà thầu
        thời gian tổ chức lựa chọn nhà thầu
        loại hợp đồng và thời gian thực hiện gói thầu
        tùy chọn mua thêm nếu có
        """,
        """
        [1] Thời gian thẩm định kế hoạch lựa chọn nhà thầu tối đa là bao nhiêu ngày theo {ref}?
        [0] Kế hoạch lựa chọn nhà thầu {pkg} gồm những nội dung nào?
        [2] Có được chia nhỏ {pkg} để chỉ định thầu không?
        """,
    ),
    topic(
        "gia_goi_thau",
        "quy_trinh",
        """
        Giá gói thầu
        Xác định giá gói thầu
        Cập nhật giá gói thầu
        """,
        """
        Giá gói thầu {sector} {scope} được xác định trên cơ sở dự toán được duyệt, báo giá của ít nhất {count} nhà \
            cung cấp hoặc kết quả trúng thầu trước đó.
        Trường hợp thời điểm đóng thầu cách ngày phê duyệt giá gói thầu quá {days2} ngày thì phải cập nhật \
            giá gói thầu.
        Giá gói thầu bao gồm toàn bộ chi phí để thực hiện gói thầu, kể cả chi phí dự phòng không quá \
            {pct2}, phí, lệ phí và thuế.
        Căn cứ xác định giá gói thầu gồm:
        """,
        """
        dự toán được cơ quan có thẩm quyền phê duyệt
        giá trúng thầu của gói thầu tương tự trong vòng 12 tháng
        báo giá của nhà cung cấp trên Hệ thống mạng đấu thầu quốc gia
        kết quả thẩm định giá của tổ chức có chức năng thẩm định giá
        giá niêm yết của nhà sản xuất
        """,
        """
        [1] Giá {pkg} được xác định dựa trên những căn cứ nào?
        [2] Khi nào phải cập nhật giá gói thầu theo {ref}?
        [0] Chi phí dự phòng trong giá gói thầu tối đa là bao nhiêu phần trăm?
        """,
    ),
    topic(
        "hsmt",
        "quy_trinh",
        """
        Hồ sơ mời thầu
        Lập hồ sơ mời thầu
        Sửa đổi, làm rõ hồ sơ mời thầu
        """,
        """
        Hồ sơ mời thầu {sector} {scope} được lập theo mẫu ban hành kèm theo {self} và phải nêu đầy đủ tiêu chuẩn \
            đánh giá về năng lực, kinh nghiệm và kỹ thuật.
        Hồ sơ mời thầu không được nêu yêu cầu về nhãn hiệu, xuất xứ cụ thể của hàng hóa hoặc nêu điều kiện \
            nhằm hạn chế sự tham gia của nhà thầu.
        Trường hợp sửa đổi hồ sơ mời thầu, bên mời thầu phải đăng tải quyết định sửa đổi trước thời điểm \
            đóng thầu tối thiểu {days} ngày.
        Nhà thầu đề nghị làm rõ hồ sơ mời thầu gửi văn bản đến bên mời thầu tối thiểu {count} ngày làm việc \
            trước ngày đóng thầu.
        Hồ sơ mời thầu bao gồm các nội dung sau:
        """,
        """
        chỉ dẫn nhà thầu và bảng dữ liệu đấu thầu
        tiêu chuẩn đánh giá hồ sơ dự thầu
        biểu mẫu dự thầu và bảng khối lượng mời thầu
        yêu cầu về kỹ thuật và chỉ dẫn kỹ thuật
        điều kiện chung và điều kiện cụ thể của hợp đồng
        mẫu bảo đảm thực hiện hợp đồng
        """,
        """
        [0] Hồ sơ mời thầu {pkg} gồm những nội dung gì?
        [2] Sửa đổi hồ sơ mời thầu phải đăng tải trước thời điểm đóng thầu bao nhiêu ngày theo {ref}?
        [1] Hồ sơ mời thầu có được yêu cầu nhãn hiệu, xuất xứ hàng hóa không?
        """,
    ),
)
