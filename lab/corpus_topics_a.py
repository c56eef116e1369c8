"""Topic bank, part A: general provisions (chapter "chung").

Placeholders filled per article: {sector} (the packages, in full), {pkg} (the same, short), {scope}
(where the document applies), {self} ("Quy định này", ...), {org}, {boss}, {f}/{F} (the article title),
numbers {pct}, {pct2}, {days}, {days2}, {months}, {amount}, {amount2}, {count}, {day}, {month}, {year}.
Questions ("asks") may also use {ref} (the document as users cite it) and {ctx} (packages and place); a
question tagged ``[i]`` is asked only of articles with the i-th title.
"""

from __future__ import annotations

from ragperf_lab.corpus_text import Topic, topic

TOPICS_A: tuple[Topic, ...] = (
    topic(
        "pham_vi",
        "chung",
        """
        Phạm vi điều chỉnh
        Phạm vi điều chỉnh và nguyên tắc áp dụng
        """,
        """
        {self} quy định chi tiết hoạt động lựa chọn nhà thầu thực hiện {sector} {scope}.
        {self} áp dụng đối với gói thầu sử dụng vốn ngân sách nhà nước, nguồn thu hợp pháp của đơn vị sự \
            nghiệp công lập có giá trị từ {amount} trở lên.
        Trường hợp điều ước quốc tế mà Việt Nam là thành viên có quy định khác thì áp dụng quy định của \
            điều ước quốc tế đó.
        {self} không điều chỉnh các trường hợp sau đây:
        """,
        """
        gói thầu thuộc dự án sử dụng vốn vay ODA, vốn vay ưu đãi mà nhà tài trợ có yêu cầu riêng
        mua sắm nhằm duy trì hoạt động thường xuyên có giá trị dưới {amount}
        gói thầu thuộc danh mục bí mật nhà nước
        hoạt động mua sắm của cơ quan đại diện Việt Nam ở nước ngoài
        gói thầu cấp bách khắc phục hậu quả thiên tai, dịch bệnh
        """,
        """
        Phạm vi điều chỉnh của {ref} gồm những gì?
        {ref} có áp dụng cho gói thầu sử dụng vốn vay ODA không?
        """,
    ),
    topic(
        "doi_tuong",
        "chung",
        """
        Đối tượng áp dụng
        Đối tượng áp dụng và trách nhiệm phối hợp
        """,
        """
        {self} áp dụng đối với cơ quan, tổ chức, cá nhân có hoạt động liên quan đến lựa chọn nhà thầu thực \
            hiện {sector} {scope}.
        Đối tượng áp dụng bao gồm:
        Tổ chức, cá nhân nước ngoài tham gia {sector} {scope} có trách nhiệm tuân thủ {self} và pháp luật Việt Nam.
        """,
        """
        người có thẩm quyền phê duyệt kế hoạch lựa chọn nhà thầu
        chủ đầu tư, bên mời thầu và tổ chuyên gia
        tổ chức thẩm định hồ sơ mời thầu và kết quả lựa chọn nhà thầu
        nhà thầu, nhà thầu phụ và thành viên liên danh
        cơ quan quản lý nhà nước về đấu thầu
        đơn vị sự nghiệp công lập tự bảo đảm chi thường xuyên
        """,
        """
        {ref} áp dụng cho những đối tượng nào?
        Nhà thầu nước ngoài có thuộc đối tượng áp dụng của {ref} không?
        """,
    ),
    topic(
        "giai_thich",
        "chung",
        """
        Giải thích từ ngữ
        Giải thích thuật ngữ về gói thầu quy mô nhỏ
        """,
        """
        Trong {self} áp dụng đối với {sector} {scope}, các từ ngữ dưới đây được hiểu như sau:
        Gói thầu quy mô nhỏ là {pkg} có giá gói thầu không quá {amount2}.
        Thời điểm đóng thầu là thời điểm hết hạn nhận hồ sơ dự thầu, được ghi trong hồ sơ mời thầu và không \
            sớm hơn {days} ngày kể từ ngày phát hành.
        """,
        """
        hồ sơ mời thầu là toàn bộ tài liệu sử dụng cho hình thức đấu thầu rộng rãi, đấu thầu hạn chế
        hồ sơ dự thầu là toàn bộ tài liệu do nhà thầu lập và nộp theo yêu cầu của hồ sơ mời thầu
        giá đánh giá là giá dự thầu sau khi sửa lỗi, hiệu chỉnh sai lệch và quy đổi các yếu tố về một mặt bằng
        nhà thầu chính là nhà thầu chịu trách nhiệm tham dự thầu, đứng tên dự thầu và ký kết hợp đồng
        nhà thầu phụ đặc biệt là nhà thầu thực hiện công việc quan trọng do nhà thầu chính đề xuất
        dịch vụ phi tư vấn là dịch vụ logistics, bảo hiểm, quảng cáo, vệ sinh, bảo vệ
        """,
        """
        [1] Gói thầu quy mô nhỏ được hiểu như thế nào theo {ref}?
        [0] Theo {ref}, giá đánh giá được hiểu như thế nào?
        """,
    ),
    topic(
        "tu_cach",
        "chung",
        """
        Tư cách hợp lệ của nhà thầu
        Tư cách hợp lệ của nhà thầu liên danh
        Điều kiện về tư cách hợp lệ của nhà thầu nước ngoài
        """,
        """
        Nhà thầu là tổ chức có tư cách hợp lệ khi đáp ứng đủ các điều kiện sau đây:
        Nhà thầu liên danh phải có thỏa thuận liên danh, trong đó quy định rõ thành viên đứng đầu liên danh \
            và phần công việc của từng thành viên; số thành viên liên danh không quá {count}.
        Nhà thầu nước ngoài tham dự {sector} {scope} phải liên danh với nhà thầu trong nước hoặc sử dụng nhà thầu \
            phụ trong nước với tỷ lệ giá trị công việc không thấp hơn {pct2}.
        Nhà thầu đã đăng ký trên Hệ thống mạng đấu thầu quốc gia trước thời điểm đóng thầu ít nhất {days} ngày.
        """,
        """
        có đăng ký thành lập, hoạt động do cơ quan có thẩm quyền của Việt Nam cấp
        hạch toán tài chính độc lập
        không đang trong quá trình thực hiện thủ tục giải thể hoặc bị thu hồi giấy chứng nhận đăng ký doanh nghiệp
        không đang trong thời gian bị cấm tham dự thầu
        bảo đảm cạnh tranh trong đấu thầu theo quy định
        có tên trên Hệ thống mạng đấu thầu quốc gia
        """,
        """
        [0] Theo {ref}, tư cách hợp lệ của nhà thầu được quy định như thế nào?
        [2] Nhà thầu nước ngoài tham dự {pkg} cần đáp ứng điều kiện gì về tư cách hợp lệ?
        [1] Nhà thầu liên danh được tối đa bao nhiêu thành viên theo {ref}?
        """,
    ),
    topic(
        "canh_tranh",
        "chung",
        """
        Bảo đảm cạnh tranh trong lựa chọn nhà thầu
        Độc lập về pháp lý và độc lập về tài chính
        """,
        """
        Nhà thầu tham dự {sector} {scope} phải độc lập về pháp lý và độc lập về tài chính với chủ đầu tư, bên mời \
            thầu và nhà thầu tư vấn lập hồ sơ mời thầu.
        Nhà thầu và chủ đầu tư được đánh giá là độc lập về pháp lý và tài chính khi đáp ứng các điều kiện sau:
        Tỷ lệ sở hữu vốn của nhà thầu tại chủ đầu tư hoặc ngược lại không vượt quá {pct2}.
        Nhà thầu tư vấn giám sát không được tham dự gói thầu xây lắp, hàng hóa mà mình giám sát.
        """,
        """
        không cùng thuộc một cơ quan hoặc tổ chức trực tiếp quản lý
        không có cổ phần hoặc vốn góp của nhau vượt mức quy định
        không cùng có cổ phần hoặc vốn góp với một tổ chức, cá nhân khác vượt mức quy định
        nhà thầu tư vấn lập hồ sơ thiết kế không tham dự gói thầu thi công
        thành viên tổ chuyên gia không có quan hệ gia đình với người đại diện nhà thầu
        """,
        """
        [0] Tỷ lệ sở hữu vốn tối đa giữa nhà thầu và chủ đầu tư để bảo đảm cạnh tranh theo {ref} là bao nhiêu?
        [1] Thế nào là độc lập về pháp lý và độc lập về tài chính trong đấu thầu {pkg}?
        """,
    ),
    topic(
        "uu_dai",
        "chung",
        """
        Ưu đãi trong lựa chọn nhà thầu
        Ưu đãi đối với hàng hóa có xuất xứ Việt Nam
        Ưu đãi đối với doanh nghiệp nhỏ và siêu nhỏ
        """,
        """
        Hàng hóa có chi phí sản xuất trong nước chiếm tỷ lệ từ {pct2} trở lên được hưởng ưu đãi \
            khi tham dự {sector} {scope}.
        Nhà thầu thuộc đối tượng được hưởng ưu đãi được cộng thêm điểm ưu đãi hoặc được trừ {pct} giá đánh \
            giá khi so sánh, xếp hạng.
        Các đối tượng được hưởng ưu đãi bao gồm:
        Gói thầu xây lắp có giá gói thầu không quá {amount2} chỉ cho phép nhà thầu là doanh nghiệp nhỏ, \
            doanh nghiệp siêu nhỏ tham dự thầu.
        """,
        """
        nhà thầu sử dụng số lượng lao động là nữ giới từ 25% trở lên
        nhà thầu sử dụng lao động là thương binh, người khuyết tật
        doanh nghiệp nhỏ, doanh nghiệp siêu nhỏ theo quy định của pháp luật
        hàng hóa sản xuất trong nước đáp ứng tiêu chuẩn môi trường
        nhà thầu có cam kết chuyển giao công nghệ cho doanh nghiệp trong nước
        sản phẩm đổi mới sáng tạo được cơ quan có thẩm quyền công nhận
        """,
        """
        [1] Hàng hóa có xuất xứ Việt Nam được ưu đãi như thế nào trong {pkg}?
        [0,1] Tỷ lệ chi phí sản xuất trong nước bao nhiêu thì được hưởng ưu đãi theo {ref}?
        [2] Doanh nghiệp nhỏ được ưu đãi gì khi tham dự gói thầu xây lắp?
        """,
    ),
    topic(
        "hanh_vi_cam",
        "chung",
        """
        Các hành vi bị cấm trong hoạt động đấu thầu
        Hành vi thông thầu và gian lận trong đấu thầu
        """,
        """
        Nghiêm cấm các hành vi sau đây trong lựa chọn nhà thầu thực hiện {sector} {scope}:
        Hành vi thông thầu bao gồm việc thỏa thuận để một hoặc nhiều bên rút khỏi việc dự thầu, thỏa thuận \
            để một bên thắng thầu hoặc thỏa thuận nâng giá dự thầu.
        Người có hành vi gian lận, cố ý cung cấp thông tin sai lệch trong hồ sơ dự thầu bị cấm tham gia \
            hoạt động đấu thầu từ {months} tháng.
        """,
        """
        đưa, nhận, môi giới hối lộ trong lựa chọn nhà thầu
        lợi dụng chức vụ, quyền hạn để can thiệp bất hợp pháp vào hoạt động đấu thầu
        thông thầu, dàn xếp kết quả lựa chọn nhà thầu
        gian lận, làm giả tài liệu chứng minh năng lực và kinh nghiệm
        cản trở nhà thầu nộp hồ sơ dự thầu trên Hệ thống mạng đấu thầu quốc gia
        tiết lộ thông tin về hồ sơ dự thầu trước khi công khai kết quả
        chuyển nhượng thầu trái quy định
        """,
        """
        [1] Hành vi thông thầu là gì và bị xử lý thế nào theo {ref}?
        [0] Những hành vi nào bị cấm trong đấu thầu {pkg}?
        """,
    ),
    topic(
        "chi_phi",
        "chung",
        """
        Chi phí trong lựa chọn nhà thầu
        Chi phí thẩm định hồ sơ mời thầu và kết quả lựa chọn nhà thầu
        """,
        """
        Chi phí lập, thẩm định hồ sơ mời thầu đối với {sector} {scope} được tính bằng {pct} giá gói thầu nhưng tối \
            thiểu 1.000.000 đồng và tối đa {amount}.
        Chi phí thẩm định kết quả lựa chọn nhà thầu được tính bằng {pct} giá gói thầu, tối đa không quá {amount}.
        Chi phí nộp hồ sơ dự thầu qua mạng là 330.000 đồng đối với mỗi hồ sơ dự thầu.
        Các khoản chi phí trong lựa chọn nhà thầu gồm:
        """,
        """
        chi phí lập hồ sơ yêu cầu và đánh giá hồ sơ đề xuất
        chi phí thẩm định kế hoạch lựa chọn nhà thầu
        chi phí giải quyết kiến nghị của nhà thầu về kết quả lựa chọn nhà thầu
        chi phí đăng tải thông tin trên Hệ thống mạng đấu thầu quốc gia
        chi phí thuê tư vấn đấu thầu độc lập
        """,
        """
        [1] Chi phí thẩm định hồ sơ mời thầu được tính bao nhiêu phần trăm giá gói thầu theo {ref}?
        [0] Chi phí trong lựa chọn nhà thầu {pkg} gồm những khoản nào?
        """,
    ),
    topic(
        "thong_tin",
        "chung",
        """
        Cung cấp, đăng tải thông tin về đấu thầu
        Thời hạn đăng tải thông tin trên Hệ thống mạng đấu thầu quốc gia
        """,
        """
        Bên mời thầu có trách nhiệm đăng tải thông tin về {sector} {scope} trên Hệ thống mạng đấu thầu quốc gia.
        Thông báo mời thầu phải được đăng tải chậm nhất {days} ngày trước ngày phát hành hồ sơ mời thầu.
        Kết quả lựa chọn nhà thầu được đăng tải trong thời hạn {days} ngày kể từ ngày phê duyệt.
        Các thông tin phải đăng tải gồm:
        """,
        """
        kế hoạch lựa chọn nhà thầu
        thông báo mời quan tâm, thông báo mời sơ tuyển
        thông báo mời thầu và hồ sơ mời thầu
        danh sách ngắn nhà thầu
        kết quả lựa chọn nhà thầu và thông tin chủ yếu của hợp đồng
        thông tin xử lý vi phạm pháp luật về đấu thầu
        """,
        """
        [1] Thông báo mời thầu phải đăng tải trước bao nhiêu ngày theo {ref}?
        [0] Những thông tin nào phải đăng tải trên Hệ thống mạng đấu thầu quốc gia đối với {pkg}?
        """,
    ),
)
