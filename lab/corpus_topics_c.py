"""Topic bank, part C: bidding, evaluation and award.

Placeholders as in ``corpus_topics_a``.
"""

from __future__ import annotations

from ragperf_lab.corpus_text import Topic, topic

TOPICS_C: tuple[Topic, ...] = (
    topic(
        "bao_dam_du_thau",
        "quy_trinh",
        """
        Bảo đảm dự thầu
        Giá trị và thời gian có hiệu lực của bảo đảm dự thầu
        Hoàn trả, giải tỏa bảo đảm dự thầu
        """,
        """
        Nhà thầu tham dự {sector} {scope} phải thực hiện biện pháp bảo đảm dự thầu trước thời điểm đóng thầu dưới \
            hình thức đặt cọc, thư bảo lãnh dự thầu của tổ chức tín dụng hoặc giấy chứng nhận bảo hiểm bảo \
            lãnh.
        Giá trị bảo đảm dự thầu bằng {pct} giá gói thầu, căn cứ quy mô và tính chất của từng gói thầu.
        Thời gian có hiệu lực của bảo đảm dự thầu bằng thời gian có hiệu lực của hồ sơ dự thầu cộng thêm {days} ngày.
        Bảo đảm dự thầu được hoàn trả hoặc giải tỏa cho nhà thầu không được lựa chọn trong thời hạn {days} \
            ngày kể từ ngày kết quả lựa chọn nhà thầu được phê duyệt.
        Bảo đảm dự thầu không được hoàn trả trong các trường hợp sau đây:
        """,
        """
        nhà thầu rút hồ sơ dự thầu sau thời điểm đóng thầu và trong thời gian có hiệu lực của hồ sơ dự thầu
        nhà thầu vi phạm pháp luật về đấu thầu dẫn đến phải hủy thầu
        nhà thầu không tiến hành hoặc từ chối hoàn thiện hợp đồng trong thời hạn quy định
        nhà thầu không thực hiện biện pháp bảo đảm thực hiện hợp đồng
        nhà thầu từ chối nhận thông báo trúng thầu mà không có lý do chính đáng
        """,
        """
        [1] Thời hạn hiệu lực của bảo đảm dự thầu là bao nhiêu ngày theo {ref}?
        [0,1] Giá trị bảo đảm dự thầu {pkg} bằng bao nhiêu phần trăm giá gói thầu?
        [2] Trường hợp nào nhà thầu không được hoàn trả bảo đảm dự thầu?
        """,
    ),
    topic(
        "mo_thau",
        "quy_trinh",
        """
        Mở thầu
        Mở hồ sơ đề xuất về kỹ thuật
        Thời điểm đóng thầu và mở thầu
        """,
        """
        Việc mở thầu {sector} {scope} phải được tiến hành công khai trong thời hạn không quá {count} giờ kể từ thời \
            điểm đóng thầu.
        Đối với đấu thầu qua mạng, biên bản mở thầu được đăng tải công khai trên Hệ thống mạng đấu thầu \
            quốc gia ngay sau khi mở thầu.
        Hồ sơ đề xuất về tài chính của nhà thầu đáp ứng yêu cầu kỹ thuật được mở trong thời hạn {days} ngày \
            kể từ ngày phê duyệt danh sách nhà thầu đáp ứng yêu cầu về kỹ thuật.
        Biên bản mở thầu bao gồm các nội dung chủ yếu sau:
        """,
        """
        tên nhà thầu và số lượng hồ sơ dự thầu
        giá dự thầu ghi trong đơn dự thầu và giá trị giảm giá
        giá trị và hiệu lực của bảo đảm dự thầu
        thời gian có hiệu lực của hồ sơ dự thầu
        thời gian thực hiện gói thầu
        """,
        """
        [0] Biên bản mở thầu {pkg} gồm những nội dung gì?
        [1] Hồ sơ đề xuất về tài chính được mở khi nào theo {ref}?
        [2] Thời điểm đóng thầu và mở thầu {pkg} được xác định như thế nào?
        """,
    ),
    topic(
        "danh_gia",
        "quy_trinh",
        """
        Đánh giá hồ sơ dự thầu
        Làm rõ hồ sơ dự thầu
        Sửa lỗi và hiệu chỉnh sai lệch
        """,
        """
        Tổ chuyên gia đánh giá hồ sơ dự thầu {sector} {scope} căn cứ tiêu chuẩn đánh giá và các yêu cầu khác trong \
            hồ sơ mời thầu.
        Thời gian đánh giá hồ sơ dự thầu tối đa là {days} ngày kể từ ngày mở thầu đến ngày bên mời thầu \
            trình chủ đầu tư phê duyệt kết quả.
        Nhà thầu có sai lệch thiếu với tổng giá trị tuyệt đối lớn hơn {pct2} giá dự thầu thì bị loại.
        Việc làm rõ hồ sơ dự thầu không được làm thay đổi bản chất của nhà thầu tham dự thầu và giá dự thầu.
        Trình tự đánh giá hồ sơ dự thầu gồm các bước sau:
        """,
        """
        kiểm tra tính hợp lệ của hồ sơ dự thầu
        đánh giá năng lực và kinh nghiệm của nhà thầu
        đánh giá về kỹ thuật theo tiêu chí đạt, không đạt hoặc chấm điểm
        sửa lỗi số học và hiệu chỉnh sai lệch
        xếp hạng nhà thầu theo giá đánh giá
        """,
        """
        [0] Thời gian đánh giá hồ sơ dự thầu {pkg} tối đa là bao lâu?
        [2] Sai lệch thiếu bao nhiêu phần trăm thì nhà thầu bị loại theo {ref}?
        [1] Làm rõ hồ sơ dự thầu có được thay đổi giá dự thầu không?
        """,
    ),
    topic(
        "phuong_phap",
        "quy_trinh",
        """
        Phương pháp giá thấp nhất
        Phương pháp kết hợp giữa kỹ thuật và giá
        Tiêu chuẩn đánh giá về năng lực và kinh nghiệm
        """,
        """
        Phương pháp giá thấp nhất được áp dụng đối với {sector} {scope} đơn giản, quy mô nhỏ, trong đó các đề xuất \
            về kỹ thuật chỉ cần đáp ứng yêu cầu tối thiểu.
        Theo phương pháp kết hợp giữa kỹ thuật và giá, tỷ trọng điểm về kỹ thuật không thấp hơn 70% và tỷ \
            trọng điểm về giá bằng {pct2} tổng số điểm.
        Nhà thầu phải có doanh thu bình quân hằng năm tối thiểu {amount2} và đã hoàn thành ít nhất {count} \
            hợp đồng tương tự.
        Tiêu chuẩn đánh giá về năng lực và kinh nghiệm gồm:
        """,
        """
        kinh nghiệm thực hiện hợp đồng tương tự
        năng lực tài chính, doanh thu và nguồn lực tín dụng
        năng lực nhân sự chủ chốt và thiết bị thi công
        lịch sử không hoàn thành hợp đồng
        uy tín của nhà thầu qua việc thực hiện các hợp đồng trước đó
        """,
        """
        [0] Phương pháp giá thấp nhất áp dụng cho {pkg} khi nào?
        [1] Tỷ trọng điểm kỹ thuật và điểm giá trong phương pháp kết hợp theo {ref} là bao nhiêu?
        [2] Nhà thầu cần doanh thu bình quân bao nhiêu để đáp ứng năng lực tài chính?
        """,
    ),
    topic(
        "thuong_thao",
        "quy_trinh",
        """
        Thương thảo hợp đồng
        Nguyên tắc thương thảo hợp đồng
        """,
        """
        Nhà thầu xếp hạng thứ nhất được mời đến thương thảo hợp đồng {sector} {scope}; trường hợp không đến thương \
            thảo trong thời hạn {days} ngày thì bị loại.
        Việc thương thảo hợp đồng không được làm thay đổi đơn giá dự thầu của nhà thầu sau khi sửa lỗi, \
            hiệu chỉnh sai lệch và trừ giá trị giảm giá.
        Trường hợp thương thảo không thành công, bên mời thầu mời nhà thầu xếp hạng tiếp theo vào thương thảo.
        Nội dung thương thảo hợp đồng gồm:
        """,
        """
        các nội dung chưa đủ chi tiết, chưa rõ hoặc chưa phù hợp giữa hồ sơ mời thầu và hồ sơ dự thầu
        các sai lệch do nhà thầu phát hiện và đề xuất trong hồ sơ dự thầu
        nhân sự chủ chốt thay thế có năng lực tương đương hoặc cao hơn
        khối lượng mời thầu còn thiếu so với hồ sơ thiết kế
        """,
        """
        [0] Nhà thầu không đến thương thảo hợp đồng trong bao nhiêu ngày thì bị loại theo {ref}?
        [1] Thương thảo hợp đồng {pkg} có được thay đổi đơn giá dự thầu không?
        """,
    ),
    topic(
        "ket_qua",
        "quy_trinh",
        """
        Thẩm định và phê duyệt kết quả lựa chọn nhà thầu
        Công khai kết quả lựa chọn nhà thầu
        Hoàn thiện và ký kết hợp đồng
        """,
        """
        Kết quả lựa chọn nhà thầu {sector} {scope} phải được thẩm định trước khi phê duyệt; thời gian thẩm định tối \
            đa {days} ngày kể từ ngày nhận đủ hồ sơ.
        Chủ đầu tư phê duyệt kết quả lựa chọn nhà thầu trong thời hạn {count} ngày làm việc kể từ ngày nhận \
            được tờ trình và báo cáo thẩm định.
        Thông báo kết quả lựa chọn nhà thầu được gửi đến các nhà thầu tham dự thầu và nêu rõ lý do nhà thầu \
            không được lựa chọn.
        Văn bản phê duyệt kết quả lựa chọn nhà thầu phải bao gồm:
        """,
        """
        tên nhà thầu trúng thầu
        giá trúng thầu và loại hợp đồng
        thời gian thực hiện hợp đồng
        danh sách nhà thầu không được lựa chọn và lý do
        những nội dung lưu ý khi ký kết hợp đồng
        """,
        """
        [0] Thời gian thẩm định kết quả lựa chọn nhà thầu tối đa là bao nhiêu ngày theo {ref}?
        [0] Văn bản phê duyệt kết quả lựa chọn nhà thầu {pkg} gồm những nội dung nào?
        [1] Kết quả lựa chọn nhà thầu {pkg} phải công khai trong bao nhiêu ngày?
        """,
    ),
    topic(
        "qua_mang",
        "quy_trinh",
        """
        Đấu thầu qua mạng
        Lộ trình áp dụng lựa chọn nhà thầu qua mạng
        Xử lý sự cố kỹ thuật trên Hệ thống mạng đấu thầu quốc gia
        """,
        """
        Lựa chọn nhà thầu qua mạng được áp dụng đối với {sector} {scope} theo hình thức đấu thầu rộng rãi, chào \
            hàng cạnh tranh và chỉ định thầu rút gọn.
        Nhà thầu nộp hồ sơ dự thầu qua mạng bằng chứng thư số đã đăng ký trên Hệ thống mạng đấu thầu quốc gia.
        Tỷ lệ gói thầu tổ chức lựa chọn nhà thầu qua mạng đạt tối thiểu {pct2} về số lượng gói thầu trong năm {year}.
        Trường hợp Hệ thống mạng đấu thầu quốc gia gặp sự cố, thời điểm đóng thầu được gia hạn thêm tối \
            thiểu {count} ngày làm việc kể từ khi khắc phục sự cố.
        Các trường hợp không bắt buộc đấu thầu qua mạng gồm:
        """,
        """
        gói thầu thuộc danh mục bí mật nhà nước
        gói thầu tổ chức tại địa bàn không có kết nối internet ổn định
        gói thầu mua sắm trong trường hợp khẩn cấp
        gói thầu có yêu cầu nộp mẫu vật, hàng hóa để kiểm tra
        """,
        """
        [1] Tỷ lệ gói thầu đấu thầu qua mạng phải đạt bao nhiêu phần trăm theo {ref}?
        [2] Hệ thống mạng đấu thầu quốc gia gặp sự cố thì thời điểm đóng thầu {pkg} xử lý thế nào?
        [0] Nhà thầu nộp hồ sơ dự thầu qua mạng cần chứng thư số không?
        """,
    ),
    topic(
        "tinh_huong",
        "quy_trinh",
        """
        Xử lý tình huống trong đấu thầu
        Xử lý tình huống khi giá dự thầu vượt giá gói thầu
        Gia hạn thời điểm đóng thầu
        """,
        """
        Trường hợp đến thời điểm đóng thầu có ít hơn {count} nhà thầu nộp hồ sơ dự thầu {sector} {scope}, bên mời \
            thầu được gia hạn thời điểm đóng thầu tối thiểu {days} ngày.
        Trường hợp giá dự thầu của nhà thầu xếp hạng thứ nhất vượt giá gói thầu, chủ đầu tư xem xét điều \
            chỉnh giá gói thầu nếu phần vượt không quá {pct2} giá gói thầu.
        Trường hợp nhà thầu đề xuất nhân sự chủ chốt không đáp ứng, nhà thầu được phép thay thế một lần \
            trong thời hạn {days} ngày.
        Các tình huống phát sinh được xử lý theo nguyên tắc sau:
        """,
        """
        bảo đảm cạnh tranh, công bằng, minh bạch và hiệu quả kinh tế
        căn cứ kế hoạch lựa chọn nhà thầu và hồ sơ mời thầu đã phát hành
        người có thẩm quyền quyết định và chịu trách nhiệm về quyết định của mình
        không làm thay đổi bản chất hồ sơ dự thầu đã nộp
        """,
        """
        [1] Giá dự thầu vượt giá gói thầu thì xử lý thế nào theo {ref}?
        [2] Có ít hơn {count} nhà thầu nộp hồ sơ dự thầu {pkg} thì có được gia hạn đóng thầu không?
        """,
    ),
)
